// Package client submits re-ranking jobs to workers over NATS JetStream and
// waits for their results.
//
// It may import schemas only (it repeats the subject names of the worker
// package instead of importing it, so clients do not link the worker).
//
// Example:
//
//	nc, _ := nats.Connect("nats://127.0.0.1:4222")
//	defer nc.Drain()
//	c, _ := client.New(nc, client.Options{Model: "demo"})
//	bm25 := 14.35
//	res, err := c.Submit(ctx, &schemas.Job{
//		ID:    "q-1",
//		Query: "what is the capital of france",
//		Candidates: []schemas.Candidate{
//			{ID: "d1", Text: "Paris is the capital of France.", BM25: &bm25},
//		},
//	})
//	if err != nil { ... }            // transport problem or ctx
//	if res.Error != nil { ... }      // the job was rejected: res.Error.Code
//	for _, r := range res.Results { fmt.Println(r.ID, r.RelevanceScore) }
package client
