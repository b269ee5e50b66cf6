// Package atomicdir writes a set of files as one version, so that readers
// never mix files of two versions.
//
// It follows the pattern Kubernetes uses for projected volumes: every
// Write creates a new version directory inside the output directory,
// writes and fsyncs each file there, and then replaces the symbolic link
// "current" with one rename(2), which is atomic. Readers open files
// through the link:
//
//	output_dir/current        -> ..v20260102T150405.000000000Z.1234
//	output_dir/current/svid.pem
//	output_dir/current/orders.token
//
// A reader that resolves the link once per pass (os.OpenRoot, readlink -f,
// os.path.realpath) and reads every file of the pass from that directory
// sees one version only. The version that was current before a Write stays
// until the next Write, so such a reader has time to finish; older
// versions are removed.
//
//	w, err := atomicdir.New("/run/spiffe-sts", atomicdir.Options{})
//	...
//	err = w.Write(map[string][]byte{"svid.pem": certPEM, "orders.token": []byte(token)})
//	...
//	files, err := atomicdir.ReadSet("/run/spiffe-sts", "svid.pem", "orders.token")
package atomicdir
