package accesstoken

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// BenchmarkCachePutFull measures storing a verified token in a full
// cache, which evicts one.
func BenchmarkCachePutFull(b *testing.B) {
	const size = 1024
	now := time.Unix(1_800_000_000, 0)
	leaf := testca.New(b, "example.org").SVID(b, "spiffe://example.org/web", time.Hour).Certificates[0]
	sum := sha256.Sum256(leaf.Raw)
	claims := &Claims{Subject: "spiffe://example.org/web", Audience: Audience{"spiffe://example.org/api"},
		Confirmation: Confirmation{X5TS256: base64.RawURLEncoding.EncodeToString(sum[:])}}
	c := newTokenCache(size)
	raws := make([]string, 2*size)
	for i := range raws {
		raws[i] = fmt.Sprint("token-", i)
	}
	for i := range size {
		c.put(raws[i], claims, leaf, now.Add(time.Duration(i)*time.Second), now)
	}
	i := 0
	for b.Loop() {
		c.put(raws[i%len(raws)], claims, leaf, now.Add(time.Duration(i%3600)*time.Second), now)
		i++
	}
}
