package pgtest_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/pgtest"
)

func dial(c *pgtest.Cluster) error {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port())), 2*time.Second)
	if err == nil {
		conn.Close()
	}
	return err
}

func TestCluster(t *testing.T) {
	c := pgtest.Start(t)
	if err := dial(c); err != nil {
		t.Fatalf("server not listening: %v", err)
	}
	c.NewDatabase(t)
	c.Stop(t)
	if err := dial(c); err == nil {
		t.Fatal("server still listening after Stop")
	}
	c.Start(t)
	if err := dial(c); err != nil {
		t.Fatalf("server not listening after Start: %v", err)
	}
	c.Close()
	if err := dial(c); err == nil {
		t.Fatal("server still listening after Close")
	}
	c.Close()
}
