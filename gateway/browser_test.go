package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rerank/rerank/gateway"
)

// TestBrowserRequestsAreRefused: what a web page can make a browser send to
// an open gateway is refused before the body is read: a cross-site form or
// text/plain POST (415), a request from another origin (403), and, on a
// loopback gateway, a request for a Host that is not a loopback name, as a
// DNS-rebinding page sends (421). API clients are unaffected.
func TestBrowserRequestsAreRefused(t *testing.T) {
	const body = `{"query":"q","documents":["a"]}`
	for _, tc := range []struct {
		name     string
		loopback bool
		method   string
		hdr      map[string]string // Host is the request's host
		status   int
		code     string
	}{
		{"json", false, "POST", map[string]string{"Content-Type": "application/json"}, 200, ""},
		{"json with charset", false, "POST", map[string]string{"Content-Type": "application/json; charset=utf-8"}, 200, ""},
		{"no content type (API clients)", false, "POST", nil, 200, ""},
		{"text/plain", false, "POST", map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, 415, "unsupported_media_type"},
		{"form", false, "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"multipart", false, "POST", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"},
		{"cross-site origin", false, "POST", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "forbidden_origin"},
		{"opaque origin", false, "POST", map[string]string{"Content-Type": "application/json", "Origin": "null"}, 403, "forbidden_origin"},
		{"cross-site origin on GET", false, "GET", map[string]string{"Origin": "https://evil.example"}, 403, "forbidden_origin"},
		{"same origin", false, "POST", map[string]string{"Content-Type": "application/json", "Origin": "http://gw.example:8080", "Host": "gw.example:8080"}, 200, ""},
		{"same origin, default port", false, "POST", map[string]string{"Content-Type": "application/json", "Origin": "http://gw.example", "Host": "gw.example:80"}, 200, ""},
		{"other port", false, "POST", map[string]string{"Content-Type": "application/json", "Origin": "http://gw.example:9000", "Host": "gw.example:8080"}, 403, "forbidden_origin"},
		{"any host when not on loopback", false, "POST", map[string]string{"Host": "evil.example:8080"}, 200, ""},
		{"rebound host", true, "POST", map[string]string{"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, 421, "misdirected_request"},
		{"rebound host on GET", true, "GET", map[string]string{"Host": "evil.example:8080"}, 421, "misdirected_request"},
		{"localhost", true, "POST", map[string]string{"Host": "localhost:8080"}, 200, ""},
		{"a.localhost", true, "POST", map[string]string{"Host": "a.localhost:8080"}, 200, ""},
		{"127.0.0.2", true, "POST", map[string]string{"Host": "127.0.0.2:8080"}, 200, ""},
		{"::1", true, "POST", map[string]string{"Host": "[::1]:8080"}, 200, ""},
		{"no port", true, "POST", map[string]string{"Host": "127.0.0.1"}, 200, ""},
		{"localhost.evil.example", true, "POST", map[string]string{"Host": "localhost.evil.example"}, 421, "misdirected_request"},
		{"127.0.0.1.nip.io", true, "POST", map[string]string{"Host": "127.0.0.1.nip.io:8080"}, 421, "misdirected_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &fakeQueue{models: []string{"m"}}
			s, err := gateway.New(gateway.Config{LoopbackOnly: tc.loopback}, q, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			path, b := "/v1/rerank", strings.NewReader(body)
			if tc.method == "GET" {
				path, b = "/v1/models", nil
			}
			req := httptest.NewRequest(tc.method, "http://127.0.0.1:8080"+path, nil)
			if b != nil {
				req = httptest.NewRequest(tc.method, "http://127.0.0.1:8080"+path, b)
			}
			for k, v := range tc.hdr {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.status || (tc.code != "" && !strings.Contains(rec.Body.String(), `"`+tc.code+`"`)) {
				t.Fatalf("%d %s, want %d %s", rec.Code, rec.Body.String(), tc.status, tc.code)
			}
			if tc.status != http.StatusOK && rec.Header().Get("Connection") != "close" {
				t.Fatalf("a request refused before its body was read keeps its connection: %v", rec.Header())
			}
			if tc.status != http.StatusOK && len(q.jobs) != 0 {
				t.Fatalf("a refused request published a job")
			}
		})
	}
}
