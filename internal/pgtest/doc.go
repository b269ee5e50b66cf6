// Package pgtest starts a throwaway PostgreSQL cluster for tests, from
// Debian's binaries (/usr/lib/postgresql/*/bin), in a fresh temporary
// directory, listening only on 127.0.0.1 at a free port and on a Unix
// socket inside that directory. It never touches a system cluster.
//
// initdb refuses to run as root, so when the tests run as root the
// cluster runs as the system user "spiffests" (created when absent);
// otherwise it runs as the current user. fsync is off: the data are
// thrown away.
//
//	func TestWithPostgres(t *testing.T) {
//		c := pgtest.Start(t) // Close is registered with t.Cleanup
//		dsn := c.NewDatabase(t)
//		...
//		c.Stop(t)  // an outage
//		c.Start(t) // and recovery, on the same port and data
//	}
//
// When the binaries are absent the test fails, saying to install the
// `postgresql` package, unless SPIFFE_STS_SKIP_PG=1 is set, which skips it.
package pgtest
