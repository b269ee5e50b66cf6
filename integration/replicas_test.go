//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe-sts/spiffe-sts/internal/pgtest"
)

// Replica test settings: keys rotate every 8 s and are published for
// twice the 2 s JWKS max-age before they sign, so a run of a couple of
// minutes sees many rotations.
const (
	replicaIssuerURL = "https://sts.replicas.test:8443"
	replicaMaxAge    = 2 * time.Second
	replicaRotation  = 8 * time.Second
	replicaRefresh   = 500 * time.Millisecond
)

// replica is one spiffe-sts process of the set; they share the issuer URL
// and the PostgreSQL key ring, and each has its own port and data_dir.
type replica struct {
	idx  int
	opts harness.STSOptions
	up   atomic.Bool
	mu   sync.Mutex
	h    *harness.STS
}

func (r *replica) sts() *harness.STS {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.h
}

// replicaSet is three replicas and what the test sends them.
type replicaSet struct {
	e        *env
	replicas []*replica
	src      *workloadapi.X509Source
	clients  []*http.Client // by replica: dials that replica's port for the issuer's name
}

// TestReplicas runs three spiffe-sts replicas on one PostgreSQL key ring
// under continuous load while keys rotate, one replica is killed and
// restarted, and PostgreSQL is down for 30 s, then drives a forced
// rotation and a key withdrawal through the keys command (issue 8).
func TestReplicas(t *testing.T) {
	e := newEnv(t, envOptions{})
	pg := pgtest.Start(t)
	dsn := pg.NewDatabase(t)

	// 1. The key-encryption key, as a Secret would hold it.
	kekPath := filepath.Join(t.TempDir(), "kek")
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kekPath, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf(`issuer {
  signing_algorithm = "ES256"
  default_ttl       = "1m"
  rotation_period   = %q
}
datastore "postgres" {
  connection_string       = %q
  key_encryption_key_file = %q
  refresh_interval        = %q
}
`, replicaRotation.String(), dsn, kekPath, replicaRefresh.String())

	// 2. Three replicas, started one after the other on an empty ring:
	// the first creates it, the others adopt it.
	rs := &replicaSet{e: e, src: e.source()}
	for i := range 3 {
		r := &replica{idx: i, opts: harness.STSOptions{
			Bin: e.stsBin, DataDir: t.TempDir(), Dir: t.TempDir(), Policy: policyRule,
			IssuerURL: replicaIssuerURL, ServerHCL: `  jwks_max_age = "2s"`, ExtraHCL: extra,
		}}
		rs.start(r)
		r.opts.Port = r.h.Port // a restart reuses the port
		rs.replicas = append(rs.replicas, r)
		rs.clients = append(rs.clients, replicaClient(rs.src, r.h.Addr))
	}
	t.Cleanup(func() {
		for _, r := range rs.replicas {
			if h := r.sts(); h != nil {
				_ = h.Stop()
				if t.Failed() {
					t.Logf("replica %d log:\n%s", r.idx, h.Output())
				}
			}
		}
	})

	// 3. A verifier per replica that fetched its JWKS there (a token from
	// replica i is checked by a verifier of another replica), and one that
	// refreshes only when max-age has passed, never for an unknown kid.
	fresh := make([]*accesstoken.Verifier, 3)
	for i := range fresh {
		keys, err := accesstoken.NewRemoteKeySet(t.Context(), replicaIssuerURL+protocol.PathJWKS, accesstoken.RemoteKeySetConfig{
			HTTPClient: rs.clients[i], MinRefreshInterval: replicaRefresh, RefreshInterval: replicaMaxAge,
		})
		if err != nil {
			t.Fatalf("JWKS of replica %d: %v", i, err)
		}
		fresh[i] = accesstoken.NewVerifier(replicaIssuerURL, keys, &accesstoken.Config{Audiences: []string{apiAud}, CacheSize: -1})
	}
	lazyKeys := &maxAgeKeySet{t: t, rs: rs}
	lazy := accesstoken.NewVerifier(replicaIssuerURL, lazyKeys, &accesstoken.Config{Audiences: []string{apiAud}, CacheSize: -1})

	// 4. Load: workers spread exchanges and client_credentials over the
	// replicas that are up, and verify every token twice.
	load := newReplicaLoad(rs, fresh, lazy)
	load.start(t.Context(), 4)

	// 5. Rotations under load.
	load.waitRotations(t, 1, 60*time.Second)

	// 6. SIGKILL one replica mid-load and start it again.
	before := load.sample()
	victim := rs.replicas[1]
	victim.up.Store(false)
	if err := victim.sts().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.sts().Exited()
	t.Logf("replica 1 killed")
	rs.start(victim)
	t.Logf("replica 1 restarted")
	load.checkStillValid(t, "the SIGKILL of a replica", before)

	// 7. PostgreSQL down for 30 s: every replica keeps issuing from
	// memory and stays ready.
	before = load.sample()
	pg.Stop(t)
	t.Logf("PostgreSQL stopped")
	outageEnd := time.Now().Add(30 * time.Second)
	// A replica that starts now has no ring: it exits, never ready.
	late := rs.replicas[0].opts
	late.Port, late.DataDir, late.Dir = 0, t.TempDir(), t.TempDir()
	if h, err := harness.StartSTS(t.Context(), e.spire, late); err == nil {
		_ = h.Stop()
		t.Errorf("a replica started while PostgreSQL was down became ready")
	} else if !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), `datastore "postgres"`) {
		t.Errorf("a replica started while PostgreSQL was down: %v, want an exit during start-up naming the datastore", err)
	} else {
		t.Logf("a replica started during the outage exited: %s", firstLine(err.Error()))
	}
	for time.Now().Before(outageEnd) {
		for _, r := range rs.replicas {
			if code := readyz(t, r.sts()); code != http.StatusOK {
				t.Errorf("replica %d /readyz = %d during the PostgreSQL outage, want 200", r.idx, code)
			}
		}
		time.Sleep(5 * time.Second)
	}
	pg.Start(t)
	t.Logf("PostgreSQL started")
	load.checkStillValid(t, "the PostgreSQL outage", before)
	for _, r := range rs.replicas {
		waitLog(t, r.sts(), "key ring store unavailable; signing with the in-memory key", 5*time.Second)
		waitLog(t, r.sts(), "key ring store available again", 10*time.Second)
	}

	// 8. Rotation resumes once the store is back.
	load.waitRotations(t, load.rotations()+2, 60*time.Second)
	load.stop()

	st := load.stats()
	fmt.Printf("replicas=3 rotations=%d exchanges=%d failed=%d rejected=%d\n", st.rotations, st.exchanges, st.failed, st.rejected)
	if st.failed != 0 || st.rejected != 0 || st.rotations < 3 {
		t.Fatalf("replicas=3 rotations=%d exchanges=%d failed=%d rejected=%d: want at least 3 rotations, no failure and no rejection\n%s",
			st.rotations, st.exchanges, st.failed, st.rejected, strings.Join(load.errors(), "\n"))
	}
	if lazyKeys.unknownKids.Load() != 0 {
		t.Fatalf("the max-age verifier met %d unknown kids: a key signed before it was published for the window", lazyKeys.unknownKids.Load())
	}

	// 9. A forced rotation through the command: the new key is published
	// by every replica at once and signs after the publication window.
	config := rs.replicas[0].sts().ConfigPath
	out := rs.keysCmd("rotate", "-config", config)
	forced := newestKey(t, rs.keysCmd("list", "-config", config))
	if forced.state != "next" || !strings.Contains(out, forced.kid) {
		t.Fatalf("keys rotate printed %q; keys list shows the newest key %+v, want it next", out, forced)
	}
	rs.waitJWKS(t, func(kids map[string]bool) bool { return kids[forced.kid] }, 5*time.Second, "the forced key published")
	deadline := time.Now().Add(replicaMaxAge*2 + replicaRotation + 5*time.Second)
	var signedByForced string
	for signedByForced == "" && time.Now().Before(deadline) {
		tok := rs.clientCredentials(t, 0)
		if kidOf(t, tok) == forced.kid {
			signedByForced = tok
		}
		time.Sleep(200 * time.Millisecond)
	}
	if signedByForced == "" {
		t.Fatalf("no token was signed by the forced key %s within %s", forced.kid, time.Until(deadline))
	}

	// 10. Withdrawal of the signing key through the command: it leaves the
	// JWKS of every replica within the refresh interval, its tokens stop
	// verifying, and another key signs.
	revokedToken := rs.clientCredentials(t, 2)
	revoked := kidOf(t, revokedToken)
	start := time.Now()
	out = rs.keysCmd("revoke", "-config", config, "-kid", revoked)
	t.Logf("keys revoke: %s", strings.TrimSpace(out))
	rs.waitJWKS(t, func(kids map[string]bool) bool { return !kids[revoked] }, 5*time.Second, "the revoked key withdrawn")
	t.Logf("revoked key %s left the JWKS of all replicas in %s", revoked, time.Since(start).Round(time.Millisecond))
	for i := range rs.replicas {
		if kid := kidOf(t, rs.clientCredentials(t, i)); kid == revoked {
			t.Fatalf("replica %d still signs with the revoked key %s", i, revoked)
		}
	}
	keys, err := accesstoken.NewRemoteKeySet(t.Context(), replicaIssuerURL+protocol.PathJWKS, accesstoken.RemoteKeySetConfig{HTTPClient: rs.clients[1]})
	if err != nil {
		t.Fatal(err)
	}
	v := accesstoken.NewVerifier(replicaIssuerURL, keys, &accesstoken.Config{Audiences: []string{apiAud}})
	if _, err := v.Verify(t.Context(), revokedToken, leafOf(t, rs.src)); !errors.Is(err, accesstoken.ErrUnknownKey) && !errors.Is(err, accesstoken.ErrSignature) {
		t.Fatalf("a token of the revoked key: Verify = %v, want an unknown-key refusal", err)
	}
	if list := rs.keysCmd("list", "-config", config); !regexp.MustCompile(`(?m)^\s*\d+\s+` + regexp.QuoteMeta(revoked) + `\s+\S+\s+revoked\b`).MatchString(list) {
		t.Fatalf("keys list does not show %s as revoked:\n%s", revoked, list)
	}
}

// start starts r (again) and marks it up.
func (rs *replicaSet) start(r *replica) {
	rs.e.t.Helper()
	h, err := harness.StartSTS(rs.e.t.Context(), rs.e.spire, r.opts)
	if err != nil {
		rs.e.t.Fatalf("replica %d: %v", r.idx, err)
	}
	r.mu.Lock()
	r.h = h
	r.mu.Unlock()
	r.up.Store(true)
}

// keysCmd runs spiffe-sts keys with args and returns its output.
func (rs *replicaSet) keysCmd(args ...string) string {
	rs.e.t.Helper()
	ctx, cancel := context.WithTimeout(rs.e.t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, rs.e.stsBin, append([]string{"keys"}, args...)...).CombinedOutput()
	if err != nil {
		rs.e.t.Fatalf("spiffe-sts keys %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitJWKS waits until the JWKS of every replica satisfies ok.
func (rs *replicaSet) waitJWKS(t *testing.T, ok func(map[string]bool) bool, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		all := true
		for i := range rs.replicas {
			kids, _, err := fetchJWKS(t.Context(), rs.clients[i])
			if err != nil || !ok(kids) {
				all = false
				break
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen on every replica within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// clientCredentials gets a token from replica i.
func (rs *replicaSet) clientCredentials(t *testing.T, i int) string {
	t.Helper()
	tok, err := rs.token(t.Context(), i, url.Values{
		protocol.ParamGrantType: {string(protocol.GrantTypeClientCredentials)},
		protocol.ParamAudience:  {apiAud},
	})
	if err != nil {
		t.Fatalf("client_credentials at replica %d: %v", i, err)
	}
	return tok
}

// token posts form to replica i's token endpoint and returns the access
// token.
func (rs *replicaSet) token(ctx context.Context, i int, form url.Values) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, replicaIssuerURL+protocol.PathToken, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := rs.clients[i].Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var r protocol.Response
	if err := json.Unmarshal(body, &r); err != nil || r.AccessToken == "" {
		return "", fmt.Errorf("bad response %s: %v", body, err)
	}
	return r.AccessToken, nil
}

// replicaClient is an mTLS client that reaches the issuer's name at addr.
func replicaClient(src *workloadapi.X509Source, addr string) *http.Client {
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID)))
	var d net.Dialer
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: cfg,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			ForceAttemptHTTP2: true,
		},
		Timeout: 10 * time.Second,
	}
}

// fetchJWKS returns the kids of a replica's JWKS and its max-age.
func fetchJWKS(ctx context.Context, c *http.Client) (map[string]bool, time.Duration, error) {
	set, maxAge, err := fetchKeySet(ctx, c)
	if err != nil {
		return nil, 0, err
	}
	kids := map[string]bool{}
	for i := range set.Len() {
		key, _ := set.Key(i)
		if kid, ok := key.KeyID(); ok {
			kids[kid] = true
		}
	}
	return kids, maxAge, nil
}

// fetchKeySet fetches a replica's JWKS and the max-age of its
// Cache-Control header.
func fetchKeySet(ctx context.Context, c *http.Client) (jwk.Set, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, replicaIssuerURL+protocol.PathJWKS, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("JWKS: status %d: %v", resp.StatusCode, err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, 0, err
	}
	m := regexp.MustCompile(`max-age=(\d+)`).FindStringSubmatch(resp.Header.Get("Cache-Control"))
	if m == nil {
		return nil, 0, fmt.Errorf("JWKS Cache-Control %q has no max-age", resp.Header.Get("Cache-Control"))
	}
	secs, _ := strconv.Atoi(m[1])
	return set, time.Duration(secs) * time.Second, nil
}

// maxAgeKeySet is a verifier's key set that fetches the JWKS only when the
// max-age of the last copy has passed, from whichever replica is up, and
// never for an unknown kid: the verifier the publication window protects.
type maxAgeKeySet struct {
	t           *testing.T
	rs          *replicaSet
	mu          sync.Mutex
	keys        *accesstoken.StaticKeySet
	expires     time.Time
	next        int
	unknownKids atomic.Int64
}

func (k *maxAgeKeySet) LookupKey(ctx context.Context, kid string) (jwk.Key, error) {
	k.mu.Lock()
	if k.keys == nil || !time.Now().Before(k.expires) {
		for range len(k.rs.replicas) {
			i := k.next % len(k.rs.replicas)
			k.next++
			if !k.rs.replicas[i].up.Load() {
				continue
			}
			set, maxAge, err := fetchKeySet(ctx, k.rs.clients[i])
			if err != nil {
				continue
			}
			if maxAge != replicaMaxAge {
				k.t.Errorf("JWKS max-age = %s, want %s", maxAge, replicaMaxAge)
			}
			keys, err := accesstoken.NewStaticKeySet(set)
			if err != nil {
				k.t.Errorf("JWKS: %v", err)
				continue
			}
			k.keys, k.expires = keys, time.Now().Add(maxAge)
			break
		}
	}
	keys := k.keys
	k.mu.Unlock()
	if keys == nil {
		return nil, errors.New("no JWKS")
	}
	key, err := keys.LookupKey(ctx, kid)
	if errors.Is(err, accesstoken.ErrUnknownKey) {
		k.unknownKids.Add(1)
	}
	return key, err
}

// replicaLoad is the continuous load of TestReplicas.
type replicaLoad struct {
	rs     *replicaSet
	fresh  []*accesstoken.Verifier
	lazy   *accesstoken.Verifier
	svid   atomic.Pointer[string]
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	kids      map[string]bool
	recent    []issued
	exchanges int
	failed    int
	rejected  int
	errs      []string
}

type issued struct {
	token   string
	replica int
}

type loadStats struct{ rotations, exchanges, failed, rejected int }

func newReplicaLoad(rs *replicaSet, fresh []*accesstoken.Verifier, lazy *accesstoken.Verifier) *replicaLoad {
	l := &replicaLoad{rs: rs, fresh: fresh, lazy: lazy, kids: map[string]bool{}}
	svid := rs.e.jwtSVID(replicaIssuerURL).Marshal()
	l.svid.Store(&svid)
	return l
}

func (l *replicaLoad) start(ctx context.Context, workers int) {
	ctx, l.cancel = context.WithCancel(ctx)
	l.wg.Add(1)
	go func() { // a JWT-SVID well within its lifetime
		defer l.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
			c, err := workloadapi.New(ctx, workloadapi.WithAddr(l.rs.e.spire.WorkloadAPIAddr()))
			if err != nil {
				continue
			}
			if svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: replicaIssuerURL}); err == nil {
				s := svid.Marshal()
				l.svid.Store(&s)
			}
			c.Close()
		}
	}()
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := w; ctx.Err() == nil; n++ {
				l.once(ctx, n)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
}

// once sends one request to a replica that is up, alternating the grants,
// and verifies the token with a verifier of another replica and with the
// max-age verifier.
func (l *replicaLoad) once(ctx context.Context, n int) {
	i := n % len(l.rs.replicas)
	r := l.rs.replicas[i]
	if !r.up.Load() {
		return
	}
	form := url.Values{protocol.ParamAudience: {apiAud}}
	if n%2 == 0 {
		form.Set(protocol.ParamGrantType, string(protocol.GrantTypeClientCredentials))
	} else {
		form.Set(protocol.ParamGrantType, string(protocol.GrantTypeTokenExchange))
		form.Set(protocol.ParamSubjectToken, *l.svid.Load())
		form.Set(protocol.ParamSubjectTokenType, string(protocol.TokenTypeJWT))
	}
	tok, err := l.rs.token(ctx, i, form)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		if !r.up.Load() {
			return // killed while the request was in flight
		}
		l.record(func() { l.failed++; l.errs = append(l.errs, fmt.Sprintf("replica %d: %v", i, err)) })
		return
	}
	verifyErr := l.verify(ctx, i, tok)
	if ctx.Err() != nil {
		return // the load stopped while the token was being verified
	}
	kid := kidOfToken(tok)
	l.record(func() {
		l.exchanges++
		l.kids[kid] = true
		if verifyErr != nil {
			l.rejected++
			l.errs = append(l.errs, fmt.Sprintf("token of replica %d (kid %s): %v", i, kid, verifyErr))
		}
		l.recent = append(l.recent, issued{tok, i})
		if len(l.recent) > 50 {
			l.recent = l.recent[1:]
		}
	})
}

// verify checks tok with the verifier of the next replica that is up and
// with the max-age verifier.
func (l *replicaLoad) verify(ctx context.Context, from int, tok string) error {
	leaf := leafOf(l.rs.e.t, l.rs.src)
	for d := 1; d < len(l.fresh); d++ {
		j := (from + d) % len(l.fresh)
		if !l.rs.replicas[j].up.Load() {
			continue
		}
		if _, err := l.fresh[j].Verify(ctx, tok, leaf); err != nil {
			return fmt.Errorf("verifier of replica %d: %w", j, err)
		}
		break
	}
	if _, err := l.lazy.Verify(ctx, tok, leaf); err != nil {
		return fmt.Errorf("max-age verifier: %w", err)
	}
	return nil
}

func (l *replicaLoad) record(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
}

func (l *replicaLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *replicaLoad) rotations() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(len(l.kids)-1, 0)
}

func (l *replicaLoad) stats() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadStats{rotations: max(len(l.kids)-1, 0), exchanges: l.exchanges, failed: l.failed, rejected: l.rejected}
}

func (l *replicaLoad) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// sample returns the tokens issued most recently.
func (l *replicaLoad) sample() []issued {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]issued(nil), l.recent...)
}

// waitRotations waits until tokens of n+1 keys have been issued.
func (l *replicaLoad) waitRotations(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for l.rotations() < n {
		if time.Now().After(deadline) {
			st := l.stats()
			t.Fatalf("rotations=%d after %s, want %d (exchanges=%d failed=%d rejected=%d)\n%s",
				st.rotations, within, n, st.exchanges, st.failed, st.rejected, strings.Join(l.errors(), "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("rotations=%d", l.rotations())
}

// checkStillValid verifies tokens issued before an event.
func (l *replicaLoad) checkStillValid(t *testing.T, event string, tokens []issued) {
	t.Helper()
	if len(tokens) == 0 {
		t.Fatalf("no token issued before %s", event)
	}
	for _, tok := range tokens {
		if err := l.verify(t.Context(), tok.replica, tok.token); err != nil {
			t.Errorf("a token issued before %s no longer verifies: %v", event, err)
		}
	}
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// waitLog waits until a replica's log has a line containing text.
func waitLog(t *testing.T, h *harness.STS, text string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(h.Output(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("replica log has no %q within %s", text, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readyz returns the status of a replica's /readyz.
func readyz(t *testing.T, h *harness.STS) int {
	t.Helper()
	code, _ := readyzBody(h)
	return code
}

// readyzBody returns the status and body of /readyz; 0 when it does not
// answer.
func readyzBody(h *harness.STS) (int, string) {
	resp, err := http.Get(h.HealthURL + protocol.PathReadyz)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// keyRow is one line of `spiffe-sts keys list`.
type keyRow struct {
	seq        int
	kid, state string
}

// newestKey returns the row with the greatest seq of a keys list table.
func newestKey(t *testing.T, list string) keyRow {
	t.Helper()
	var newest keyRow
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		seq, err := strconv.Atoi(f[0])
		if err != nil {
			continue // the header
		}
		if seq > newest.seq {
			newest = keyRow{seq: seq, kid: f[1], state: f[3]}
		}
	}
	if newest.kid == "" {
		t.Fatalf("keys list shows no key:\n%s", list)
	}
	return newest
}

// kidOf returns the kid of a token's JWS header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	kid := kidOfToken(tok)
	if kid == "" {
		t.Fatalf("token has no kid")
	}
	return kid
}

func kidOfToken(tok string) string {
	msg, err := jws.Parse([]byte(tok))
	if err != nil || len(msg.Signatures()) != 1 {
		return ""
	}
	kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
	return kid
}
