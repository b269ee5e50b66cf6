package forwarded_test

import (
	"reflect"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

type pairs = forwarded.XFCCElement

func TestParseXFCC(t *testing.T) {
	const hash1 = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"
	const hash2 = "9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e"
	tests := []struct {
		name      string
		in        string
		expect    []forwarded.XFCCElement
		expectErr string
	}{
		// The three examples of Envoy's header documentation.
		{
			name: "one element, URI SAN, quoted Subject",
			in:   `By=http://frontend.lyft.com;Hash=` + hash1 + `;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com`,
			expect: []forwarded.XFCCElement{{
				{"By", "http://frontend.lyft.com"}, {"Hash", hash1},
				{"Subject", "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"}, {"URI", "http://testclient.lyft.com"},
			}},
		},
		{
			name: "two hops",
			in:   `By=http://frontend.lyft.com;Hash=` + hash1 + `;URI=http://testclient.lyft.com,By=http://backend.lyft.com;Hash=` + hash2 + `;URI=http://frontend.lyft.com`,
			expect: []forwarded.XFCCElement{
				{{"By", "http://frontend.lyft.com"}, {"Hash", hash1}, {"URI", "http://testclient.lyft.com"}},
				{{"By", "http://backend.lyft.com"}, {"Hash", hash2}, {"URI", "http://frontend.lyft.com"}},
			},
		},
		{
			name: "URI and repeated DNS SANs",
			in:   `By=http://frontend.lyft.com;Hash=` + hash1 + `;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com`,
			expect: []forwarded.XFCCElement{{
				{"By", "http://frontend.lyft.com"}, {"Hash", hash1},
				{"Subject", "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"}, {"URI", "http://testclient.lyft.com"},
				{"DNS", "lyft.com"}, {"DNS", "www.lyft.com"},
			}},
		},
		{
			name: "separators inside quotes",
			in:   `Subject="CN=a,O=b;c=d",By=x`,
			expect: []forwarded.XFCCElement{
				{{"Subject", "CN=a,O=b;c=d"}},
				{{"By", "x"}},
			},
		},
		{
			name:   "escaped quote and backslash",
			in:     `Subject="CN=say \"hi\", O=back\\slash"`,
			expect: []forwarded.XFCCElement{{{"Subject", `CN=say "hi", O=back\slash`}}},
		},
		{
			name:   "RFC 4514 escape kept",
			in:     `Subject="CN=a\,b"`,
			expect: []forwarded.XFCCElement{{{"Subject", `CN=a\,b`}}},
		},
		{
			name:   "quoted comma then a further element",
			in:     `By=a;Subject=",",By=b`,
			expect: []forwarded.XFCCElement{{{"By", "a"}, {"Subject", ","}}, {{"By", "b"}}},
		},
		{
			name:   "lines joined with comma space",
			in:     `By=a;URI=x, By=b;URI=y`,
			expect: []forwarded.XFCCElement{{{"By", "a"}, {"URI", "x"}}, {{"By", "b"}, {"URI", "y"}}},
		},
		{
			name:   "empty values",
			in:     `By=;Subject="";URI=`,
			expect: []forwarded.XFCCElement{{{"By", ""}, {"Subject", ""}, {"URI", ""}}},
		},
		{
			name:   "keys keep their case",
			in:     `cert=abc;BY=x`,
			expect: []forwarded.XFCCElement{{{"cert", "abc"}, {"BY", "x"}}},
		},
		{name: "empty", in: ``, expectErr: "x-forwarded-client-cert syntax: element 1: empty element"},
		{name: "empty element", in: `By=a,,By=b`, expectErr: "x-forwarded-client-cert syntax: element 2: empty element"},
		{name: "trailing comma", in: `By=a,`, expectErr: "x-forwarded-client-cert syntax: element 2: empty element"},
		{name: "trailing semicolon", in: `By=a;`, expectErr: "x-forwarded-client-cert syntax: element 1: empty pair"},
		{name: "missing key", in: `=a`, expectErr: "x-forwarded-client-cert syntax: element 1: pair 1: missing key"},
		{name: "missing equals", in: `By`, expectErr: "x-forwarded-client-cert syntax: element 1: pair 1: missing '=' after the key"},
		{name: "unterminated quote", in: `By=a;Subject="CN=x,By=b`, expectErr: "x-forwarded-client-cert syntax: element 1: pair 2: unterminated quoted value"},
		{name: "escaped closing quote", in: `Subject="abc\"`, expectErr: "x-forwarded-client-cert syntax: element 1: pair 1: unterminated quoted value"},
		{
			name:      "text after closing quote",
			in:        `By=a;Subject="x"/CN=y";URI=z`,
			expectErr: "x-forwarded-client-cert syntax: element 1: pair 2: unexpected '/' after the value",
		},
		{name: "quote inside bare value", in: `By=a"b"`, expectErr: `x-forwarded-client-cert syntax: element 1: pair 1: byte '"' not allowed in an unquoted value`},
		{name: "equals inside bare value", in: `By=a=b`, expectErr: `x-forwarded-client-cert syntax: element 1: pair 1: byte '=' not allowed in an unquoted value`},
		{name: "space inside bare value", in: `By=a b`, expectErr: `x-forwarded-client-cert syntax: element 1: pair 1: unexpected 'b' after the value`},
		{name: "control byte in bare value", in: "By=a\x01", expectErr: `x-forwarded-client-cert syntax: element 1: pair 1: byte '\x01' not allowed in an unquoted value`},
		{name: "control byte in quotes", in: "Subject=\"a\nb\"", expectErr: `x-forwarded-client-cert syntax: element 1: pair 1: control byte 0xa in a quoted value`},
		{name: "key not a token", in: `B y=a`, expectErr: `x-forwarded-client-cert syntax: element 1: pair 1: missing '=' after the key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := forwarded.ParseXFCC(tt.in)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("error = %v, want %s", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.expect) {
				t.Fatalf("got %q, want %q", got, tt.expect)
			}
		})
	}
}

func TestXFCCElementString(t *testing.T) {
	el := pairs{{"By", "spiffe://example.org/proxy"}, {"Subject", `CN="x", O=a;b\c`}, {"URI", ""}}
	want := `By=spiffe://example.org/proxy;Subject="CN=\"x\", O=a;b\\c";URI=`
	if got := el.String(); got != want {
		t.Fatalf("String() = %s, want %s", got, want)
	}
	back, err := forwarded.ParseXFCC(want)
	if err != nil || !reflect.DeepEqual(back, []forwarded.XFCCElement{el}) {
		t.Fatalf("round trip: %q, %v", back, err)
	}
	if got := el.Values("by"); !reflect.DeepEqual(got, []string{"spiffe://example.org/proxy"}) {
		t.Fatalf("Values(by) = %q", got)
	}
}

// FuzzParseXFCC checks that ParseXFCC never panics and that what it
// accepts survives a round trip through XFCCElement.String.
func FuzzParseXFCC(f *testing.F) {
	for _, s := range []string{
		`By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com`,
		`By=a;URI=x, By=b;URI=y`,
		`Subject="CN=say \"hi\", O=back\\slash";DNS=a;DNS=b`,
		`Cert="-----BEGIN%20CERTIFICATE-----%0AMIIB%2B%3D%0A-----END%20CERTIFICATE-----%0A"`,
		`By=a;Subject="x`, `,`, `a=b;`, `=`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		elements, err := forwarded.ParseXFCC(s)
		if err != nil {
			return
		}
		if len(elements) == 0 {
			t.Fatal("no error and no elements")
		}
		var again string
		for i, el := range elements {
			if len(el) == 0 {
				t.Fatal("empty element accepted")
			}
			if i > 0 {
				again += ","
			}
			again += el.String()
		}
		back, err := forwarded.ParseXFCC(again)
		if err != nil {
			t.Fatalf("re-parsing %q: %v", again, err)
		}
		if !reflect.DeepEqual(back, elements) {
			t.Fatalf("round trip of %q: %q != %q", s, back, elements)
		}
	})
}
