package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
)

const deployments = "../../deployments/nats/"

// asyncErrors collects a connection's asynchronous errors: a refused publish or subscribe is
// reported only that way.
type asyncErrors chan error

// waitViolation waits for the server to refuse op ("publish" or "subscription") on subject.
func (e asyncErrors) waitViolation(t *testing.T, op, subject string) {
	t.Helper()
	want := fmt.Sprintf("permissions violation for %s to %q", op, subject)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-e:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
				return
			}
		case <-deadline:
			t.Fatalf("the server did not refuse the %s to %s within 5s", op, subject)
		}
	}
}

func connectAs(t *testing.T, url, user, password string) (*nats.Conn, asyncErrors) {
	t.Helper()
	errs := make(asyncErrors, 64)
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func jetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func shutdown(t *testing.T, s *server.Server) {
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
}

// fromDeployment reads a file of deployments/nats with the environment a deployment gives it,
// and moves what it listens on to this test's own ports and folders.
func fromDeployment(t *testing.T, file string) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(deployments + file)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0 // no monitoring port to collide on
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	return opts
}

func setDeploymentPasswords(t *testing.T) natsjs.Passwords {
	pw := natsjs.NewPasswords()
	t.Setenv("DVSYNC_NATS_PASSWORD", pw.Dvsync)
	t.Setenv("PUBLISHER_NATS_PASSWORD", pw.Publisher)
	return pw
}

func start(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	shutdown(t, s)
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatal("the server did not start")
	}
	return s
}

func TestDevServerGivesEachRoleWhatItNeedsAndNoMore(t *testing.T) {
	pw := natsjs.NewPasswords()
	s, err := natsjs.StartEmbeddedWithAccounts("127.0.0.1", -1, t.TempDir(), pw)
	if err != nil {
		t.Fatal(err)
	}
	shutdown(t, s)
	checkRoles(t, s.ClientURL(), pw)
}

func TestDeploymentConfigGivesEachRoleWhatItNeedsAndNoMore(t *testing.T) {
	pw := setDeploymentPasswords(t)
	opts := fromDeployment(t, "nats-server.conf")
	if opts.MaxPayload != 8<<20 || !opts.JetStream {
		t.Fatalf("max payload %d, JetStream %v: the deployment must match dvsync dev's server", opts.MaxPayload, opts.JetStream)
	}
	checkRoles(t, start(t, opts).ClientURL(), pw)
}

func TestDeploymentConfigDoesNotStartWithoutItsPasswords(t *testing.T) {
	setDeploymentPasswords(t)
	os.Unsetenv("PUBLISHER_NATS_PASSWORD") // t.Setenv restores it
	_, err := server.ProcessConfigFile(deployments + "nats-server.conf")
	if err == nil || !strings.Contains(err.Error(), "PUBLISHER_NATS_PASSWORD") {
		t.Fatalf("a deployment without the publisher's password: %v; want an error naming the variable", err)
	}
}

// checkRoles shows, on a server with dvsync's accounts, that dvsync can do all it does and that a
// publisher can publish changes, with their JetStream ack, and nothing else.
func checkRoles(t *testing.T, url string, pw natsjs.Passwords) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, who := range []struct{ user, password string }{{"", ""}, {natsjs.DvsyncUser, pw.Publisher}, {natsjs.PublisherUser, "guess"}} {
		opt := nats.UserInfo(who.user, who.password)
		if who.user == "" {
			opt = func(*nats.Options) error { return nil }
		}
		if nc, err := nats.Connect(url, opt, nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
			if nc != nil {
				nc.Close()
			}
			t.Fatalf("connecting as %q with a wrong password: %v, want an authorization violation", who.user, err)
		}
	}

	dv, dvErrs := connectAs(t, url, natsjs.DvsyncUser, pw.Dvsync)
	js := jetStream(t, dv)
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatalf("dvsync cannot set up its streams: %v", err)
	}
	pub, pubErrs := connectAs(t, url, natsjs.PublisherUser, pw.Publisher)
	pjs := jetStream(t, pub)

	// A publisher's change is stored, and acked to it, once.
	change := &nats.Msg{Subject: "dvsync.changes.customer", Data: []byte(`{"specversion":"1.0"}`)}
	for i, dup := range []bool{false, true} {
		ack, err := pjs.PublishMsg(ctx, change, jetstream.WithMsgID("bc-1"))
		if err != nil {
			t.Fatalf("the publisher's change (publish %d) was not acked: %v", i+1, err)
		}
		if ack.Stream != natsjs.ChangesStream || ack.Duplicate != dup {
			t.Fatalf("ack %+v on publish %d, want stream %s, duplicate %v", ack, i+1, natsjs.ChangesStream, dup)
		}
	}
	worker, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := worker.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg := <-batch.Messages()
	if msg == nil || msg.Subject() != change.Subject {
		t.Fatalf("the worker consumer got %v, want the publisher's change (%v)", msg, batch.Error())
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatalf("dvsync cannot ack: %v", err)
	}

	// dvsync publishes and reads error events and throttle notices.
	ev := domain.ErrorEvent{ID: "dvsync-err-1", Failure: *domain.InvalidEvent("not JSON"), Table: "customer", Key: "C1"}
	if err := (natsjs.Publisher{JS: js}).PublishError(ctx, ev); err != nil {
		t.Fatalf("dvsync cannot publish an error event: %v", err)
	}
	projector, err := js.CreateOrUpdateConsumer(ctx, natsjs.ErrorsStream, jetstream.ConsumerConfig{Durable: natsjs.ProjectorConsumer, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if batch, err = projector.Fetch(1, jetstream.FetchMaxWait(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if msg := <-batch.Messages(); msg == nil || msg.Headers().Get(natsjs.HeaderKey) != "C1" {
		t.Fatalf("dvsync cannot read its error event: %v %v", msg, batch.Error())
	}
	holds := make(chan time.Time, 4)
	other, _ := connectAs(t, url, natsjs.DvsyncUser, pw.Dvsync)
	share, err := natsjs.ShareThrottle(other, "app", func(u time.Time) { holds <- u }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer share.Stop()
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	sender, err := natsjs.ShareThrottle(dv, "app", func(time.Time) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Stop()
	until := time.Now().Add(time.Minute)
	sender.Notify(until)
	if got := waitHold(t, holds); !got.Equal(until) {
		t.Fatalf("held until %s, want %s", got, until)
	}

	// What reaches dvsync's error and throttle subjects from now on is watched.
	var watches []*nats.Subscription
	for _, subject := range []string{natsjs.ErrorsSubjects, "dvsync.throttle.>"} {
		watch, err := other.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		watches = append(watches, watch)
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}

	// The publisher is refused everything else: forged errors, resolutions and throttle notices,
	// the JetStream API, reading dvsync's subjects.
	forged := map[string][]byte{
		"dvsync.errors.coupling.customer":                                               []byte(`{"kind":"dependency_not_coupled"}`),
		"dvsync.errors.resolved.customer":                                               []byte(`{"table":"customer","key":"C1"}`),
		natsjs.ThrottleSubject("app"):                                                   notice(time.Now().Add(time.Minute), "forger"),
		"$JS.API.STREAM.DELETE." + natsjs.ChangesStream:                                 nil,
		"$JS.API.STREAM.PURGE." + natsjs.ErrorsStream:                                   nil,
		"$JS.API.CONSUMER.DELETE." + natsjs.ChangesStream + "." + natsjs.WorkerConsumer: nil,
		"$JS.API.STREAM.CREATE.EVIL":                                                    []byte(`{"name":"EVIL","subjects":["dvsync.errors.>"]}`),
	}
	for subject, data := range forged {
		if err := pub.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
		pubErrs.waitViolation(t, "publish", subject)
	}
	if _, err := pub.SubscribeSync("dvsync.>"); err != nil {
		t.Fatal(err)
	}
	pubErrs.waitViolation(t, "subscription", "dvsync.>")

	// A JetStream publish names the subject its ack goes to; aimed at dvsync's subjects, the ack
	// stays in the publishers' account.
	for _, reply := range []string{"dvsync.errors.setup.customer", natsjs.ThrottleSubject("app"), "$JS.API.STREAM.DELETE." + natsjs.ErrorsStream} {
		if err := pub.PublishMsg(&nats.Msg{Subject: "dvsync.changes.customer", Reply: reply, Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// The stream acks in order: once this one is acked, the acks above have been sent, and a
	// flush of the watching connection brings anything they put on dvsync's subjects.
	if _, err := pjs.Publish(ctx, "dvsync.changes.customer", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, watch := range watches {
		if n, _, _ := watch.Pending(); n != 0 {
			m, _ := watch.NextMsg(0)
			t.Fatalf("%d messages reached %s from the publisher, the first on %s: %q", n, watch.Subject, m.Subject, m.Data)
		}
	}
	if ev := share.Ignored(); ev != 0 {
		t.Fatalf("%d throttle notices reached dvsync", ev)
	}
	select {
	case u := <-holds:
		t.Fatalf("a forged throttle notice held dvsync until %s", u)
	default:
	}
	errorsStream, err := js.Stream(ctx, natsjs.ErrorsStream)
	if err != nil {
		t.Fatalf("the errors stream: %v", err)
	}
	if info, _ := errorsStream.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("the errors stream holds %d messages, want dvsync's one", info.State.Msgs)
	}
	changes, err := js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatalf("the changes stream: %v", err)
	}
	if info, _ := changes.Info(ctx); info.State.Msgs != 5 {
		t.Fatalf("the changes stream holds %d messages, want the publisher's 5", info.State.Msgs)
	}
	if _, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer); err != nil {
		t.Fatalf("the worker consumer: %v", err)
	}
	if _, err := js.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the publisher created a stream: %v", err)
	}
	select {
	case err := <-dvErrs:
		t.Fatalf("dvsync was refused something: %v", err)
	default:
	}
}

// freePorts reserves n ports for routes, which must be known before the servers start.
func freePorts(t *testing.T, n int) []int {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func TestDeploymentClusterConfigFormsAClusterWithTheSameRoles(t *testing.T) {
	pw := setDeploymentPasswords(t)
	routePassword := natsjs.NewPasswords().Dvsync
	t.Setenv("NATS_ROUTE_PASSWORD", routePassword)
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://route:%s@127.0.0.1:%d", routePassword, p))
	}
	t.Setenv("NATS_ROUTES", "["+strings.Join(routes, ", ")+"]")
	var urls []string
	for i, p := range ports {
		t.Setenv("NATS_SERVER_NAME", fmt.Sprintf("nats-%d", i))
		opts := fromDeployment(t, "cluster.conf")
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", p
		urls = append(urls, start(t, opts).ClientURL())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dv, _ := connectAs(t, urls[0], natsjs.DvsyncUser, pw.Dvsync)
	js := jetStream(t, dv)
	top := natsjs.DefaultTopology()
	top.Replicas = 3
	// The nodes elect a JetStream leader first: until then a request goes unanswered.
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := natsjs.Ensure(attempt, js, top)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dvsync cannot set up R3 streams on the cluster: %v", err)
		}
		t.Log("waiting for the cluster's JetStream:", err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	pub, pubErrs := connectAs(t, urls[1], natsjs.PublisherUser, pw.Publisher)
	ack, err := jetStream(t, pub).Publish(ctx, "dvsync.changes.customer", []byte(`{}`))
	if err != nil || ack.Stream != natsjs.ChangesStream {
		t.Fatalf("a change published on another node: ack %+v, %v", ack, err)
	}
	if err := pub.Publish("dvsync.errors.setup.customer", nil); err != nil {
		t.Fatal(err)
	}
	pubErrs.waitViolation(t, "publish", "dvsync.errors.setup.customer")
	reader, _ := connectAs(t, urls[2], natsjs.DvsyncUser, pw.Dvsync)
	s, err := jetStream(t, reader).Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	if info := s.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 || info.State.Msgs != 1 {
		t.Fatalf("changes stream %+v on a three-node cluster, want R3 with the change", info)
	}
}
