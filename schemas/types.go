package schemas

// Version is the highest job schema version this build understands.
const Version = 1

// Candidate is one first-stage hit to re-score.
type Candidate struct {
	ID   string `msgpack:"id" json:"id"`
	Text string `msgpack:"text" json:"text"`
	// BM25 and DPR are the first-stage scores, injected as text into the
	// model input by models trained that way. Nil when absent.
	BM25 *float64 `msgpack:"bm25,omitempty" json:"bm25,omitempty"`
	DPR  *float64 `msgpack:"dpr,omitempty" json:"dpr,omitempty"`
}

// Job asks for one query's candidates to be re-ranked.
type Job struct {
	V               int               `msgpack:"v,omitempty" json:"v,omitempty"`
	ID              string            `msgpack:"id" json:"id"`
	Model           string            `msgpack:"model,omitempty" json:"model,omitempty"`
	Query           string            `msgpack:"query" json:"query"`
	Candidates      []Candidate       `msgpack:"candidates" json:"candidates"`
	TopN            int               `msgpack:"top_n,omitempty" json:"top_n,omitempty"`
	ReturnDocuments bool              `msgpack:"return_documents,omitempty" json:"return_documents,omitempty"`
	ReplyTo         string            `msgpack:"reply_to,omitempty" json:"reply_to,omitempty"`
	Meta            map[string]string `msgpack:"meta,omitempty" json:"meta,omitempty"`

	// Lane is set by the edge that received the job (the worker from its
	// subject), never read from the wire.
	Lane Lane `msgpack:"-" json:"-"`
	// Tenant is the namespace the job came from ("" for the shared one),
	// set by the edge from where the NATS server put the job (TenantOf of
	// its subject), never read from the wire.
	Tenant string `msgpack:"-" json:"-"`
}

// Ranked is one re-scored candidate. Index is its position in Job.Candidates.
type Ranked struct {
	Index          int     `msgpack:"index" json:"index"`
	ID             string  `msgpack:"id" json:"id"`
	RelevanceScore float64 `msgpack:"relevance_score" json:"relevance_score"`
	Document       *string `msgpack:"document,omitempty" json:"document,omitempty"`
}

// Timing reports where a job's time went, in milliseconds.
type Timing struct {
	QueuedMS    float64 `msgpack:"queued_ms" json:"queued_ms"`
	TokenizeMS  float64 `msgpack:"tokenize_ms" json:"tokenize_ms"`
	InferenceMS float64 `msgpack:"inference_ms" json:"inference_ms"`
	TotalMS     float64 `msgpack:"total_ms" json:"total_ms"`
}

// Result answers one Job: Results sorted best first, or Error.
type Result struct {
	V       int               `msgpack:"v" json:"v"`
	ID      string            `msgpack:"id" json:"id"`
	Model   string            `msgpack:"model" json:"model"`
	Results []Ranked          `msgpack:"results" json:"results"`
	Error   *Error            `msgpack:"error,omitempty" json:"error,omitempty"`
	Meta    map[string]string `msgpack:"meta,omitempty" json:"meta,omitempty"`
	Attempt int               `msgpack:"attempt,omitempty" json:"attempt,omitempty"`
	Worker  string            `msgpack:"worker,omitempty" json:"worker,omitempty"`
	Timing  Timing            `msgpack:"timing" json:"timing"`
	// JobStream and JobSeq name the job message this result answers: the
	// job stream and its sequence there (what the producer's publish ack
	// said, the same for a duplicate publish within the dedup window). A
	// job id reused after the window is a new message, so a reader that
	// checks them (Answers) never takes an older instance's result.
	JobStream string `msgpack:"job_stream,omitempty" json:"job_stream,omitempty"`
	JobSeq    uint64 `msgpack:"job_seq,omitempty" json:"job_seq,omitempty"`
	// ModelDigest is the provenance of the scores: a SHA-256 (hex) of
	// everything that decided them — the model's graph, tokenizer and
	// settings, and its injection config. Two results with one digest were
	// scored by the same model; empty when the worker cannot say.
	ModelDigest string `msgpack:"model_digest,omitempty" json:"model_digest,omitempty"`
	// Cached counts the pairs of this job whose scores came from the
	// worker's pair cache or the fleet's shared one (the tenant's own
	// entries, scored by the model of this digest), from another job
	// scoring the same pair at the same moment, or from a repeat of the
	// pair within the job, instead of being computed for it.
	Cached int `msgpack:"cached,omitempty" json:"cached,omitempty"`
}

// Answers reports whether r answers the job message stored as message seq
// of stream: false for a result of another instance of the same job id,
// or one that does not say (a worker before these fields).
func (r *Result) Answers(stream string, seq uint64) bool {
	return r.JobSeq != 0 && r.JobSeq == seq && r.JobStream == stream
}
