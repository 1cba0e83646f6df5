package syncworker

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A lane's queue takes any number of messages without blocking the dispatcher, hands them out
// in order, and ends once closed and empty.
func TestALaneQueueNeverBlocksTheDispatcherAndKeepsOrder(t *testing.T) {
	q := newLaneQueue()
	for i := range 100 {
		q.push(job{meta: &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: uint64(i)}}})
	}
	q.close()
	for i := range 100 {
		j, ok := q.pop()
		if !ok || j.meta.Sequence.Stream != uint64(i) {
			t.Fatalf("pop %d: got %v, %v", i, j.meta, ok)
		}
	}
	if _, ok := q.pop(); ok {
		t.Fatal("a closed, empty queue handed out a message")
	}
}
