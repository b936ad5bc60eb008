package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rerank/rerank/client"
	"github.com/rerank/rerank/schemas"
	"github.com/rerank/rerank/worker"
)

const accountsConf = "../deploy/nats/accounts.conf"

// errLog collects a connection's asynchronous errors (permission
// violations arrive that way).
type errLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *errLog) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err.Error())
	l.mu.Unlock()
}

// find waits up to 5 s for an error containing s and returns it.
func (l *errLog) find(s string) string {
	var found string
	waitFor(5*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, e := range l.errs {
			if strings.Contains(e, s) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// authEnv is a server loaded from testdata/tls-server.conf, which includes
// deploy/nats/accounts.conf, with generated NKEYs and certificates.
type authEnv struct {
	pki                               *pki
	ops, worker, gateway, search, ads nkeyUser
	workerCert, workerKey             string
	clientCert, clientKey             string
	ns                                *server.Server
	url                               string
	rogue                             *pki
	rogueClientCert, rogueKeyF        string
}

func startAuthServer(t *testing.T) *authEnv {
	t.Helper()
	dir := t.TempDir()
	e := &authEnv{pki: newPKI(t, "rerank"), rogue: newPKI(t, "rogue")}
	e.ops, e.worker, e.gateway = newNkeyUser(t, dir, "ops"), newNkeyUser(t, dir, "worker"), newNkeyUser(t, dir, "gateway")
	e.search, e.ads = newNkeyUser(t, dir, "search"), newNkeyUser(t, dir, "ads")
	e.workerCert, e.workerKey = e.pki.issue(t, "rerank-worker", false)
	e.clientCert, e.clientKey = e.pki.issue(t, "rerank-client", false)
	e.rogueClientCert, e.rogueKeyF = e.rogue.issue(t, "intruder", false)
	for k, v := range map[string]string{
		"RERANK_NKEY_OPS": e.ops.pub, "RERANK_NKEY_WORKER": e.worker.pub, "RERANK_NKEY_GATEWAY": e.gateway.pub,
		"RERANK_NKEY_CLIENT_SEARCH": e.search.pub, "RERANK_NKEY_CLIENT_ADS": e.ads.pub,
		"FAULTS_STORE_DIR": t.TempDir(), "FAULTS_TLS_CERT": e.pki.serverCert, "FAULTS_TLS_KEY": e.pki.serverKey,
		"FAULTS_TLS_CA": e.pki.ca,
	} {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile("testdata/tls-server.conf")
	if err != nil {
		t.Fatalf("loading testdata/tls-server.conf (including %s): %v", accountsConf, err)
	}
	opts.NoSigs, opts.NoLog = true, os.Getenv("RERANK_FAULTS_NATS_LOG") == ""
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.NoLog {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	e.ns = ns
	e.url = fmt.Sprintf("tls://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)
	return e
}

// conn connects as u over mutual TLS, recording asynchronous errors.
func (e *authEnv) conn(t *testing.T, u nkeyUser) (*nats.Conn, *errLog) {
	t.Helper()
	log := &errLog{}
	nc, err := nats.Connect(e.url, nats.Nkey(u.pub, u.kp.Sign), nats.RootCAs(e.pki.ca),
		nats.ClientCert(e.clientCert, e.clientKey), nats.ErrorHandler(log.handler), nats.Name("faults-"+u.name),
		nats.CustomInboxPrefix(inboxOf(u.name)))
	if err != nil {
		t.Fatalf("connecting as %s: %v", u.name, err)
	}
	t.Cleanup(nc.Close)
	return nc, log
}

// authTenants are the tenants of deploy/nats/accounts.conf.
var authTenants = []string{"search", "ads"}

// inboxOf is the private inbox prefix deploy/nats/accounts.conf grants
// user name.
func inboxOf(name string) string { return "_INBOX_" + name }

// say prints a line for the report and the test log.
func say(t *testing.T, format string, a ...any) {
	t.Helper()
	fmt.Printf(format+"\n", a...) // stdout: shown by go test -v, and on failure
}

// writeJob writes a job as JSON for `rerank submit`.
func writeJob(t *testing.T, j *schemas.Job) string {
	t.Helper()
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), j.ID+".json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAuthTLSNKeys runs `rerank serve` and `rerank submit` with NKEY seed
// files over mutual TLS against deploy/nats/accounts.conf, and shows that a
// client can neither read another client's results nor forge results,
// that a worker cannot submit jobs or provision, and that connections
// without the right key or certificate are refused.
func TestAuthTLSNKeys(t *testing.T) {
	defer dumpLogs(t)
	bin, tiny, _ := assets(t)
	e := startAuthServer(t)
	tlsFlags := func(u nkeyUser, cert, key string) []string {
		return []string{"--nats-nkey", u.seedFile, "--tls-ca", e.pki.ca, "--tls-cert", cert, "--tls-key", key,
			"--nats-inbox-prefix", inboxOf(u.name)}
	}

	// Refused at the door.
	intruder := newNkeyUser(t, t.TempDir(), "intruder")
	refusals := []struct {
		what string
		opts []nats.Option
		want string
	}{
		// The server announces tls_required; the client upgrades, with the
		// system roots, which do not know the test CA.
		{"nats:// URL, no TLS settings, no credentials", nil, "tls"},
		{"TLS, no credentials", []nats.Option{nats.RootCAs(e.pki.ca), nats.ClientCert(e.clientCert, e.clientKey)}, "Authorization Violation"},
		{"TLS, unknown NKEY", []nats.Option{nats.RootCAs(e.pki.ca), nats.ClientCert(e.clientCert, e.clientKey), nats.Nkey(intruder.pub, intruder.kp.Sign)}, "Authorization Violation"},
		// With TLS 1.3 the server rejects a client certificate after the
		// client considers the handshake done, so the client may see
		// "certificate required" or just a closed connection: any error.
		{"no client certificate", []nats.Option{nats.RootCAs(e.pki.ca), nats.Nkey(e.search.pub, e.search.kp.Sign)}, ""},
		{"client certificate from another CA", []nats.Option{nats.RootCAs(e.pki.ca), nats.ClientCert(e.rogueClientCert, e.rogueKeyF), nats.Nkey(e.search.pub, e.search.kp.Sign)}, ""},
		{"server not trusted (other CA)", []nats.Option{nats.RootCAs(e.rogue.ca), nats.ClientCert(e.clientCert, e.clientKey), nats.Nkey(e.search.pub, e.search.kp.Sign)}, "certificate signed by unknown authority"},
	}
	for _, r := range refusals {
		url := e.url
		if r.opts == nil {
			url = strings.Replace(url, "tls://", "nats://", 1)
		}
		nc, err := nats.Connect(url, append(r.opts, nats.MaxReconnects(0), nats.Timeout(3*time.Second))...)
		if err == nil {
			// A rejected client certificate may only show once the server
			// answers after the handshake.
			if ferr := nc.Flush(); ferr != nil {
				err = ferr
			}
			nc.Close()
		}
		if err == nil || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: connected or wrong error: %v (want %q)", r.what, err, r.want)
			continue
		}
		say(t, "auth: refused (%s): %v", r.what, err)
	}

	// Ops provisions; workers run with --provision=false.
	opsNC, _ := e.conn(t, e.ops)
	opsJS, _ := jetstream.New(opsNC)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := worker.Provision(ctx, opsJS, []string{"demo"}, worker.Config{Tenants: authTenants}); err != nil {
		t.Fatalf("ops provisioning: %v", err)
	}
	w := startWorker(t, "w1", e.url, tiny, append(tlsFlags(e.worker, e.workerCert, e.workerKey), "--provision=false", "--tenants", "search,ads")...)

	// Legit flow 1: `rerank submit` as "search", result in its namespace.
	job := &schemas.Job{ID: "search-1", Query: "what is the capital of france", ReplyTo: "rerank.results.search.search-1"}
	for i, text := range []string{"Paris is the capital of France.", "Lyon is a city.", "Berlin is the capital of Germany."} {
		job.Candidates = append(job.Candidates, schemas.Candidate{ID: fmt.Sprintf("d%d", i), Text: text})
	}
	args := append([]string{"submit", "--nats-url", e.url, "--json", "--timeout", "60s"}, tlsFlags(e.search, e.clientCert, e.clientKey)...)
	out, err := exec.Command(bin, append(args, writeJob(t, job))...).CombinedOutput()
	if err != nil {
		t.Fatalf("rerank submit as search: %v\n%s\nworker log:\n%s", err, out, tail(w.log(), 20))
	}
	var res schemas.Result
	if err := json.Unmarshal(out, &res); err != nil || res.ID != "search-1" || len(res.Results) != 3 || res.Error != nil {
		t.Fatalf("rerank submit as search: %v %s", err, out)
	}
	say(t, "auth: allowed: `rerank submit --nats-nkey search.nk --tls-ca/--tls-cert/--tls-key` got %d results for %s from worker %s on %s",
		len(res.Results), res.ID, res.Worker, job.ReplyTo)

	// Legit flow 2: the Go client as "ads".
	adsNC, _ := e.conn(t, e.ads)
	adsClient, err := client.New(adsNC, client.Options{Model: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	adsJob := *job
	adsJob.ID, adsJob.ReplyTo = "ads-1", "rerank.results.ads.ads-1"
	ar, err := adsClient.Submit(ctx, &adsJob)
	if err != nil || ar.Error != nil || len(ar.Results) != 3 {
		t.Fatalf("ads submit: %v %+v", err, ar)
	}
	say(t, "auth: allowed: client.Submit as ads got %d results for %s on %s", len(ar.Results), ar.ID, adsJob.ReplyTo)

	// Both results are stored, once each, each in its tenant's namespace.
	// A subscriber can receive a result before the stream has stored it:
	// poll.
	rs, err := opsJS.Stream(ctx, schemas.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	var stored map[string]uint64
	if !waitFor(10*time.Second, func() bool {
		info, err := rs.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		stored = info.State.Subjects
		return len(stored) == 2 && stored["rerank.tenant.search.results.search.search-1"] == 1 && stored["rerank.tenant.ads.results.ads.ads-1"] == 1
	}) {
		t.Fatalf("stored results: %v", stored)
	}

	// Denied: "search" reaching out of its account's subjects, forging
	// results, or calling the JetStream API.
	searchNC, searchErrs := e.conn(t, e.search)
	var denied []string
	expectDenied := func(who string, errs *errLog, what, want string) {
		t.Helper()
		got := errs.find(want)
		if got == "" {
			t.Errorf("%s: %s was not denied (no %q)", who, what, want)
			return
		}
		denied = append(denied, fmt.Sprintf("%s %s: %s", who, what, got))
		say(t, "auth: denied: %s %s: %s", who, what, got)
	}
	for _, subj := range []string{">", "rerank.>", "rerank.tenant.>", "_INBOX.>", inboxOf("ads") + ".>", "$JS.>"} {
		sub, err := searchNC.SubscribeSync(subj)
		if err == nil {
			searchNC.Flush()
			if m, err := sub.NextMsg(500 * time.Millisecond); err == nil {
				t.Errorf("search received %s on %s", m.Data, m.Subject)
			}
		}
		expectDenied("search", searchErrs, "subscribing to "+subj, `Permissions Violation for Subscription to "`+subj+`"`)
	}
	for _, subj := range []string{"rerank.results.search.forged", "rerank.results.ads.ads-1", "rerank.dead.demo", "rerank.tenant.ads.jobs.demo"} {
		searchNC.Publish(subj, []byte("forged"))
		expectDenied("search", searchErrs, "publishing to "+subj, `Permissions Violation for Publish to "`+subj+`"`)
	}
	for _, req := range []struct{ subj, body string }{
		{"$JS.API.STREAM.MSG.GET.RERANK_RESULTS", `{"last_by_subj":"rerank.results.ads.ads-1"}`},
		{"$JS.API.STREAM.INFO.RERANK_RESULTS", `{"subjects_filter":"rerank.results.>"}`},
		{"$JS.API.CONSUMER.MSG.NEXT.RERANK_JOBS.rerank-demo", `{"batch":1}`},
		{"$JS.API.STREAM.DELETE.RERANK_JOBS", ``},
	} {
		if m, err := searchNC.Request(req.subj, []byte(req.body), 500*time.Millisecond); err == nil {
			t.Errorf("search got an answer on %s: %s", req.subj, m.Data)
		}
		expectDenied("search", searchErrs, "requesting "+req.subj, `Permissions Violation for Publish to "`+req.subj+`"`)
	}
	// Denied: the worker's user submitting jobs, provisioning, reading results.
	workerNC, workerErrs := e.conn(t, e.worker)
	for _, subj := range []string{"rerank.jobs.demo", "rerank.tenant.search.jobs.demo"} {
		workerNC.Publish(subj, []byte("{}"))
		expectDenied("worker", workerErrs, "publishing to "+subj, `Permissions Violation for Publish to "`+subj+`"`)
	}
	workerJS, _ := jetstream.New(workerNC)
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, err = workerJS.CreateStream(pctx, jetstream.StreamConfig{Name: "STOLEN", Subjects: []string{"rerank.>"}})
	pcancel()
	if err == nil {
		t.Error("the worker user created a stream")
	}
	expectDenied("worker", workerErrs, "creating a stream", `Permissions Violation for Publish to "$JS.API.STREAM.CREATE.STOLEN"`)
	workerNC.SubscribeSync("rerank.results.>")
	expectDenied("worker", workerErrs, "subscribing to rerank.results.>", `Permissions Violation for Subscription to "rerank.results.>"`)

	// The legit flows still work after the denials, on the same connections.
	adsJob.ID, adsJob.ReplyTo = "ads-2", "rerank.results.ads.ads-2"
	if ar, err := adsClient.Submit(ctx, &adsJob); err != nil || ar.Error != nil {
		t.Fatalf("ads second submit: %v %+v", err, ar)
	}
	if !w.healthy() {
		t.Error("worker unhealthy")
	}
	t.Logf("%d denials shown", len(denied))
}

// TestAuthCreds runs `rerank serve` and `rerank submit` with creds files
// (user JWT + NKEY seed) against a server in operator (JWT) mode; the users'
// permissions are those of deploy/nats/accounts.conf, and the tenant
// "search" has its account, with private exports (activation tokens) and
// imports as accounts.conf has them.
func TestAuthCreds(t *testing.T) {
	defer dumpLogs(t)
	bin, tiny, _ := assets(t)
	dir := t.TempDir()
	perms := confPermissions(t)

	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "rerank-faults"
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	oc.SystemAccount = sysPub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	// The service account RERANK exports tenant search's subjects
	// privately (an activation token names the one account that may import
	// them), and account SEARCH imports them onto the shared layout, as
	// accounts.conf's exports and imports do.
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "RERANK"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	tc := jwt.NewAccountClaims(spub)
	tc.Name = "SEARCH"
	for _, x := range []struct {
		subject, local string
		kind           jwt.ExportType
	}{
		{"rerank.tenant.search.jobs.>", "rerank.jobs.>", jwt.Service},
		{"rerank.tenant.search.results.>", "rerank.results.>", jwt.Stream},
		{"rerank.tenant.search.dead.>", "rerank.dead.>", jwt.Stream},
	} {
		ac.Exports.Add(&jwt.Export{Subject: jwt.Subject(x.subject), Type: x.kind, TokenReq: true})
		act := jwt.NewActivationClaims(spub)
		act.ImportSubject, act.ImportType = jwt.Subject(x.subject), x.kind
		tok, err := act.Encode(akp)
		if err != nil {
			t.Fatal(err)
		}
		tc.Imports.Add(&jwt.Import{Account: apub, Subject: jwt.Subject(x.subject), LocalSubject: jwt.RenamingSubject(x.local), Type: x.kind, Token: tok})
	}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	tjwt, err := tc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sjwt, err := sc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	resolver.Store(apub, ajwt)
	resolver.Store(spub, tjwt)
	resolver.Store(sysPub, sjwt)

	creds := func(name string) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.Name = name
		p := perms[name].perms
		uc.Pub.Allow.Add(p.Publish.Allow...)
		uc.Sub.Allow.Add(p.Subscribe.Allow...)
		signer := akp
		if perms[name].account == "SEARCH" {
			signer = skp
		}
		ujwt, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name+".creds")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	opsCreds, workerCreds, searchCreds := creds("ops"), creds("worker"), creds("search")

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver,
		SystemAccount: sysPub, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := ns.ClientURL()

	if _, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("connected without creds: %v", err)
	} else {
		say(t, "auth: refused (operator mode, no creds): %v", err)
	}
	opsNC, err := nats.Connect(url, nats.UserCredentials(opsCreds), nats.CustomInboxPrefix(inboxOf("ops")))
	if err != nil {
		t.Fatal(err)
	}
	defer opsNC.Close()
	opsJS, _ := jetstream.New(opsNC)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := worker.Provision(ctx, opsJS, []string{"demo"}, worker.Config{Tenants: []string{"search"}}); err != nil {
		t.Fatalf("ops provisioning: %v", err)
	}
	startWorker(t, "w1", url, tiny, "--nats-creds", workerCreds, "--provision=false", "--nats-inbox-prefix", inboxOf("worker"), "--tenants", "search")

	job := &schemas.Job{ID: "search-creds-1", Query: "q", ReplyTo: "rerank.results.search.search-creds-1",
		Candidates: []schemas.Candidate{{ID: "a", Text: "first passage"}, {ID: "b", Text: "second passage"}}}
	out, err := exec.Command(bin, "submit", "--nats-url", url, "--nats-creds", searchCreds, "--nats-inbox-prefix", inboxOf("search"),
		"--json", "--timeout", "60s", writeJob(t, job)).CombinedOutput()
	if err != nil {
		t.Fatalf("rerank submit --nats-creds: %v\n%s", err, out)
	}
	var res schemas.Result
	if err := json.Unmarshal(out, &res); err != nil || res.ID != job.ID || len(res.Results) != 2 {
		t.Fatalf("rerank submit --nats-creds: %v %s", err, out)
	}
	say(t, "auth: allowed: `rerank serve --nats-creds worker.creds` + `rerank submit --nats-creds search.creds` got %d results for %s", len(res.Results), res.ID)

	log := &errLog{}
	nc, err := nats.Connect(url, nats.UserCredentials(searchCreds), nats.ErrorHandler(log.handler), nats.CustomInboxPrefix(inboxOf("search")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SubscribeSync("rerank.tenant.>")
	if got := log.find(`Permissions Violation for Subscription to "rerank.tenant.>"`); got == "" {
		t.Error("creds user search could subscribe to rerank.tenant.>")
	} else {
		say(t, "auth: denied: search (creds) subscribing to rerank.tenant.>: %s", got)
	}
}

// confUser is a user of deploy/nats/accounts.conf: its permissions and
// its account.
type confUser struct {
	perms   *server.Permissions
	account string
}

// confPermissions reads the users of deploy/nats/accounts.conf (with
// placeholder keys) by name: ops, worker, gateway, search, ads.
func confPermissions(t *testing.T) map[string]confUser {
	t.Helper()
	names := map[string]string{}
	for _, n := range []string{"OPS", "WORKER", "GATEWAY", "CLIENT_SEARCH", "CLIENT_ADS"} {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		t.Setenv("RERANK_NKEY_"+n, pub)
		names[pub] = strings.ToLower(strings.TrimPrefix(n, "CLIENT_"))
	}
	opts, err := server.ProcessConfigFile(accountsConf)
	if err != nil {
		t.Fatalf("loading %s: %v", accountsConf, err)
	}
	out := map[string]confUser{}
	for _, u := range opts.Nkeys {
		if n, ok := names[u.Nkey]; ok {
			if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil || u.Account == nil {
				t.Fatalf("%s: user %s has no account, or no publish and subscribe permissions", accountsConf, n)
			}
			out[n] = confUser{perms: u.Permissions, account: u.Account.Name}
		}
	}
	want := map[string]string{"ops": "RERANK", "worker": "RERANK", "gateway": "RERANK", "search": "SEARCH", "ads": "ADS"}
	if len(out) != len(want) {
		t.Fatalf("%s: found users %v, want %v", accountsConf, out, want)
	}
	for n, acc := range want {
		if out[n].account != acc {
			t.Fatalf("%s: user %s is in account %q, want %s", accountsConf, n, out[n].account, acc)
		}
	}
	return out
}
