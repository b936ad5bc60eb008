package schemas

// NATS headers of the wire contract: on jobs, results and dead letters.
const (
	// HeaderContentType selects the encoding of a job or result
	// (ContentTypeMsgpack, the default, or ContentTypeJSON).
	HeaderContentType = "Content-Type"
	// HeaderMsgID is JetStream's deduplication id: a job's id on a job, a
	// result's own id (its job's id, stream and sequence) on a result.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderWorker names the worker that wrote a result or dead letter.
	HeaderWorker = "Rerank-Worker"
)

// Headers of a dead letter: why the job is there and where it came from.
const (
	HeaderErrorCode   = "Rerank-Error-Code" // the permanent error's code
	HeaderError       = "Rerank-Error"      // its message (at most 1 KiB)
	HeaderJobSubject  = "Rerank-Job-Subject"
	HeaderJobSequence = "Rerank-Job-Sequence" // in the job stream
	HeaderAttempt     = "Rerank-Attempt"      // deliveries of the job
	HeaderJobMsgID    = "Rerank-Job-Msg-Id"   // the job's Nats-Msg-Id
	// A trimmed dead letter: the job's payload (and its own headers) did
	// not fit the server's payload limit beside the reason headers, so the
	// dead letter holds a prefix of the job and says what the whole was.
	HeaderTrimmed        = "Rerank-Trimmed"
	HeaderOriginalSize   = "Rerank-Original-Size"
	HeaderOriginalSHA256 = "Rerank-Original-Sha256"
)
