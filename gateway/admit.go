package gateway

import (
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// admit checks what can be checked before the body is read: the Host (on a
// loopback gateway), the Origin, the bearer token and, on a POST, the
// Content-Type. A request refused here is answered without reading its
// body, and its connection is closed.
//
// The first two stop web pages: a page on another site can make the
// browser POST to a gateway it can reach (an open one on loopback, say),
// but the browser names the page's origin in Origin, and a page that
// rebinds its own name to 127.0.0.1 still sends that name as Host. The
// Content-Type check refuses the form and text/plain bodies a page can send
// without a CORS preflight.
func (s *Server) admit(r *http.Request) (tenant, error) {
	if err := s.checkHost(r); err != nil {
		return "", err
	}
	if err := checkOrigin(r); err != nil {
		return "", err
	}
	t, err := s.authorize(r)
	if err != nil {
		return "", err
	}
	if r.Method == http.MethodPost {
		return t, checkContentType(r)
	}
	return t, nil
}

// authorize returns the tenant of the request's bearer token (the empty
// tenant on an open gateway). Every token is compared, in constant time,
// so the time taken does not tell which one was close.
func (s *Server) authorize(r *http.Request) (tenant, error) {
	if len(s.tokens) == 0 {
		return "", nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	var who tenant
	found := false
	if ok {
		for _, t := range s.tokens {
			if subtle.ConstantTimeCompare([]byte(got), t.secret) == 1 && !found {
				who, found = t.tenant, true
			}
		}
	}
	if !found {
		return "", &apiError{code: codeUnauthorized, message: "missing or unknown bearer token (Authorization: Bearer …)", unread: true}
	}
	return who, nil
}

// checkHost refuses, when the gateway answers loopback names only, a Host
// that is not one.
func (s *Server) checkHost(r *http.Request) error {
	if !s.cfg.LoopbackOnly || isLoopbackHost(hostOnly(r.Host)) {
		return nil
	}
	return &apiError{code: codeMisdirected, unread: true,
		message: "this gateway listens on loopback and answers only loopback host names (localhost, 127.0.0.1, [::1])"}
}

// isLoopbackHost reports whether host, without a port, names the loopback
// interface: localhost and its subdomains (RFC 6761; browsers never ask DNS
// for them), or a loopback address.
func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostOnly drops the port of a Host header, and IPv6 brackets.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// checkOrigin refuses a request that names an Origin other than the
// gateway's own (the Host it was sent to). Browsers send Origin on every
// cross-origin request and every POST; API clients send none.
func checkOrigin(r *http.Request) error {
	o := r.Header.Get("Origin")
	if o == "" {
		return nil
	}
	if u, err := url.Parse(o); err == nil && u.Host != "" && strings.EqualFold(withPort(u.Host, u.Scheme), withPort(r.Host, u.Scheme)) {
		return nil
	}
	return &apiError{code: codeForbiddenOrigin, unread: true,
		message: "cross-origin requests are refused: the gateway serves API clients, not web pages of other sites"}
}

// withPort adds scheme's default port to a host without one.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), port)
}

// checkContentType refuses a body declared as anything but JSON. A body
// with no Content-Type is taken as JSON: API clients may omit it, and a
// browser that sends none also sends Origin.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &apiError{code: codeUnsupportedMedia, unread: true,
		message: "the body must be JSON, sent with Content-Type: application/json (curl: --json, or -H 'Content-Type: application/json')"}
}
