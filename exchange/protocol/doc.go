// Package protocol is the spiffe-sts wire protocol, shared by the server
// (package exchange), the client library (exchangeclient), stsctl and the
// gRPC API, so that a client never links the server.
//
// It holds the identifiers (TokenType, RFC 8693 §3; GrantType, RFC 6749 §4
// and RFC 8693 §2.1), the request parameter names (RFC 8693 §2.1, RFC 6749
// §4.4.2), the success response (RFC 8693 §2.2.1), the error response
// (Error, RFC 6749 §5.2 and RFC 8693 §2.2.2) with its HTTP and gRPC
// mappings, the endpoint paths, and the issuer URL rule (CheckIssuerURL,
// RFC 8414 §2 and §3).
//
// It imports only the standard library and gRPC's status, codes and
// errdetails packages.
//
// Building a form body (RFC 6749 §3.2) from the names:
//
//	form := url.Values{}
//	form.Set(protocol.ParamGrantType, protocol.GrantTypeTokenExchange.String())
//	form.Set(protocol.ParamSubjectToken, jwtSVID)
//	form.Set(protocol.ParamSubjectTokenType, protocol.TokenTypeJWT.String())
//	form.Add(protocol.ParamAudience, "spiffe://example.org/api")
//	resp, err := httpClient.PostForm(issuerURL+protocol.PathToken, form)
//
// Telling refusals apart, over HTTP or gRPC:
//
//	if errors.Is(err, protocol.ErrInvalidTarget) { ... }
//	if oauthErr, ok := protocol.ErrorFromStatus(status.Convert(err)); ok { ... }
//
// # Empty parameters
//
// RFC 6749 §3.2: "Parameters sent without a value MUST be treated as if
// they were omitted from the request." The server follows it for every
// parameter, in form and JSON bodies and in the gRPC API: an empty
// audience or resource value, too, is as if that value had not been sent.
// A parameter sent twice is refused even when one copy is empty.
package protocol
