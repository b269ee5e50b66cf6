package protocol

import (
	"errors"
	"net/url"
	"strings"
)

// CheckIssuerURL reports whether raw can be the spiffe-sts issuer
// identifier (RFC 8414 §2, which RFC 9068 §2.2 uses for "iss"): exactly
// https://host or https://host:port, with no user info, query, fragment,
// path or trailing slash.
//
// RFC 8414 §2 allows a path, but RFC 8414 §3 then inserts the well-known
// suffix between the host and the path
// (https://host/.well-known/oauth-authorization-server/path), which the
// server does not serve, so an issuer with a path is not supported. The
// server, the issuer, the configuration and the client all apply this one
// rule. The error says what is wrong without repeating the URL; callers
// add it and their own context.
func CheckIssuerURL(raw string) error {
	if raw == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a valid URL")
	case u.Scheme != "https" || u.Opaque != "" || u.Hostname() == "" || strings.HasSuffix(u.Host, ":"):
		return errors.New("must be an https URL")
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("must not have user info, a query or a fragment")
	case u.Path == "/":
		return errors.New("must not end in a slash")
	case u.Path != "" || u.RawPath != "":
		return errors.New("must not have a path")
	case raw != "https://"+u.Host:
		// For example an upper-case scheme: "iss" is compared as a string.
		return errors.New("must be an https URL")
	}
	return nil
}
