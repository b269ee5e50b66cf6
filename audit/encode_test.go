package audit_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/audit"
)

// stdJSON is what encoding/json writes for r without HTML escaping, the
// reference AppendJSON must match byte for byte.
func stdJSON(t testing.TB, r *audit.Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// baseline is a full issued-token record.
func baseline() audit.Record {
	return audit.Record{
		Time:               time.Date(2025, 3, 4, 5, 6, 7, 890123000, time.UTC),
		RequestID:          "3f2a9c",
		Transport:          "http",
		Operation:          "some_operation",
		Outcome:            audit.OutcomeIssued,
		Caller:             "spiffe://example.org/ns/prod/sa/web",
		X5TS256:            "q3fR0bSxkU8vB1qgJ2zv0yT2mKq1l0v1iO3Jw8x3o1c",
		RemoteAddr:         "192.0.2.1:51234",
		ProxySPIFFEID:      "spiffe://example.org/ns/ingress/sa/envoy",
		GrantType:          "urn:ietf:params:oauth:grant-type:token-exchange",
		SubjectTokenType:   "urn:ietf:params:oauth:token-type:jwt",
		ActorTokenType:     "urn:ietf:params:oauth:token-type:access_token",
		RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token",
		RequestedAudience:  []string{"https://api.example.org", "spiffe://example.org/db"},
		RequestedScope:     "read write",
		Impersonate:        true,
		Subject:            "spiffe://example.org/ns/prod/sa/web",
		Rule:               "spiffe://example.org/ns/prod/sa/*",
		IssuedTokenType:    "urn:ietf:params:oauth:token-type:access_token",
		Audience:           []string{"https://api.example.org"},
		Scope:              "read",
		Act:                []string{"spiffe://example.org/a", "spiffe://example.org/b"},
		JTI:                "Zm9vYmFyYmF6cXV4cXV1eA",
		KID:                "k1",
		ExpiresAt:          1741064767,
	}
}

// TestBaselineSetsEveryField keeps TestAppendJSON's baseline complete, so
// that a field added to Record and forgotten by AppendJSON fails there.
// The refusal fields are set by its "refusal" case.
func TestBaselineSetsEveryField(t *testing.T) {
	r := baseline()
	v := reflect.ValueOf(r)
	refusal := map[string]bool{"Error": true, "Reason": true, "Detail": true}
	for i := range v.NumField() {
		if v.Field(i).IsZero() && !refusal[v.Type().Field(i).Name] {
			t.Errorf("baseline leaves Record.%s unset", v.Type().Field(i).Name)
		}
	}
}

func TestAppendJSON(t *testing.T) {
	for _, tc := range []struct {
		name     string
		override func(*audit.Record)
	}{
		{name: "baseline", override: func(*audit.Record) {}},
		{name: "zero record", override: func(r *audit.Record) { *r = audit.Record{} }},
		{name: "refusal", override: func(r *audit.Record) {
			r.Outcome, r.Error, r.Reason, r.Detail = audit.OutcomeRefused, "invalid_target", "audience not allowed", "rule x: no match"
		}},
		{name: "introspection", override: func(r *audit.Record) {
			*r = audit.Record{Time: r.Time, RequestID: "a1", Transport: "http", Operation: audit.OperationIntrospect,
				Outcome: audit.OutcomeInactive, Detail: "expired", Caller: r.Caller, X5TS256: r.X5TS256,
				ProxySPIFFEID: "spiffe://example.org/ns/ingress/sa/envoy", KID: "k1"}
		}},
		{name: "empty lists", override: func(r *audit.Record) { r.Audience, r.Act, r.RequestedAudience = []string{}, nil, []string{} }},
		{name: "list of empty strings", override: func(r *audit.Record) { r.Audience = []string{"", ""} }},
		{name: "quote and backslash", override: func(r *audit.Record) { r.Detail = `say "hi" \ bye` }},
		{name: "named control chars", override: func(r *audit.Record) { r.Detail = "\b\f\n\r\t" }},
		{name: "other control chars", override: func(r *audit.Record) { r.Detail = "\x00\x01\x1f\x7f" }},
		{name: "html not escaped", override: func(r *audit.Record) { r.Reason = "<a href='x'>&amp;</a>" }},
		{name: "line and paragraph separators", override: func(r *audit.Record) { r.Reason = "a\u2028b\u2029c" }},
		{name: "invalid utf-8", override: func(r *audit.Record) { r.Caller = "spiffe://x/\xff\xfe\xc3" }},
		{name: "truncated rune at end", override: func(r *audit.Record) { r.Subject = "abc\xe2\x82" }},
		{name: "surrogate half", override: func(r *audit.Record) { r.Subject = "\xed\xa0\x80" }},
		{name: "multibyte", override: func(r *audit.Record) { r.Subject = "héllo, 世界 🎉" }},
		{name: "utf-8 replacement char itself", override: func(r *audit.Record) { r.Subject = "\ufffd" }},
		{name: "negative expiry", override: func(r *audit.Record) { r.ExpiresAt = -1 }},
		{name: "time in a zone", override: func(r *audit.Record) { r.Time = r.Time.In(time.FixedZone("x", -(5*3600 + 30*60))) }},
		{name: "time without fraction", override: func(r *audit.Record) { r.Time = time.Unix(1741064767, 0).UTC() }},
		{name: "year zero", override: func(r *audit.Record) { r.Time = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := baseline()
			tc.override(&r)
			want := stdJSON(t, &r)
			if got := r.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
			}
			prefix := []byte("prefix")
			if got := r.AppendJSON(prefix); !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Errorf("AppendJSON does not append: %s", got)
			}
		})
	}
}

// TestWriteRefusesUnencodableTime checks that a time encoding/json could
// not write is refused, not written as something else.
func TestWriteRefusesUnencodableTime(t *testing.T) {
	var out bytes.Buffer
	l, err := audit.Open(audit.Config{Path: audit.Stdout, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 24*3600)),
	} {
		if err := l.Write(&audit.Record{Time: tm}); err == nil {
			t.Errorf("Write with time %v succeeded", tm)
		}
		if _, err := json.Marshal(&audit.Record{Time: tm}); err == nil {
			t.Errorf("encoding/json encodes time %v: the check is stricter than it", tm)
		}
	}
	if out.Len() != 0 {
		t.Errorf("wrote %q", out.String())
	}
}

func TestWriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers")
	}
	l, err := audit.Open(audit.Config{Path: audit.Stdout, Stdout: discard{}})
	if err != nil {
		t.Fatal(err)
	}
	r := baseline()
	if err := l.Write(&r); err != nil { // grows the buffer
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = l.Write(&r) }); n != 0 {
		t.Errorf("Write allocates %v times per record, want 0", n)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzRecordJSON checks that AppendJSON writes what encoding/json writes,
// for arbitrary strings (invalid UTF-8, control characters, separators).
func FuzzRecordJSON(f *testing.F) {
	f.Add("r1", "refused", "a\"b\\c", "\x00\x1f\u2028", "\xff\xfe", "<&>", int64(1741064767123456789), int64(1741064767), true, 0)
	f.Add("", "", "", "", "", "", int64(0), int64(0), false, -330)
	f.Fuzz(func(t *testing.T, id, outcome, reason, detail, caller, aud string, nanos, exp int64, imp bool, offsetMin int) {
		offsetMin %= 24 * 60
		r := baseline()
		r.Time = time.Unix(0, nanos).In(time.FixedZone("z", offsetMin*60))
		r.RequestID, r.Outcome, r.Reason, r.Detail, r.Caller = id, outcome, reason, detail, caller
		r.Subject, r.Scope, r.KID = detail+caller, reason, id
		r.Audience = strings.Split(aud, ",")
		r.Act = []string{caller, aud}
		r.RequestedAudience = nil
		r.ExpiresAt, r.Impersonate = exp, imp
		if got, want := r.AppendJSON(nil), stdJSON(t, &r); !bytes.Equal(got, want) {
			t.Errorf("AppendJSON:\n got %q\nwant %q", got, want)
		}
	})
}
