package h2sniff

import (
	"bytes"
	"testing"
)

// TestRecorderCapacity checks that the recorder's buffer never grows past
// its limit, however the reads come: it is what an idle connection costs
// before it is authenticated.
func TestRecorderCapacity(t *testing.T) {
	for _, max := range []int{1000, 20800, DefaultMaxBytes} {
		for _, chunk := range []int{1, 9, 1000, 16384} {
			rec := &recorder{r: bytes.NewReader(make([]byte, 2*max)), max: max}
			p := make([]byte, chunk)
			for {
				if _, err := rec.Read(p); err != nil {
					break
				}
			}
			if len(rec.buf) != max || cap(rec.buf) > max {
				t.Errorf("max %d, reads of %d: len %d, cap %d", max, chunk, len(rec.buf), cap(rec.buf))
			}
		}
	}
}
