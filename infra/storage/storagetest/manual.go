package storagetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// EditCoupling stores, removes or only audits a person's change of a coupling, resolving the
// record's errors when asked; an edit that fails stores nothing and frees the record.
func testEditCouplingStoresRemovesAndAudits(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "M" + uuid.NewString()[:8]
	row := uuid.New()
	actor := "ada-" + key
	couple := func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		if cur.Exists {
			t.Errorf("a record never seen came as %+v", cur)
		}
		cur.RowID, cur.Entity, cur.Status, cur.RowVersion = row, "account", domain.CouplingSynced, domain.AnyVersion
		return storage.CouplingEdit{Next: &cur, Target: "customer/" + key + " to account " + row.String()}, nil
	}
	if err := s.EditCoupling(ctx, "customer", key, actor, "couple", couple); err != nil {
		t.Fatal(err)
	}
	c, err := s.Coupling(ctx, "customer", key)
	if err != nil || !c.Coupled() || c.RowID != row || c.Entity != "account" || c.Version != domain.NoVersion {
		t.Fatalf("after couple: %+v, %v", c, err)
	}
	got, err := s.CouplingOfRow(ctx, "account", row)
	ok := got.Exists
	if err != nil || !ok || got.Table != "customer" || got.Key != key || got.RowID != row {
		t.Fatalf("CouplingOfRow = %+v, %v, %v; want customer/%s", got, ok, err, key)
	}
	if c, err := s.CouplingOfRow(ctx, "contact", row); err != nil || c.Exists {
		t.Fatalf("CouplingOfRow of another entity = %v, %v; want none", c.Exists, err)
	}

	// A failing edit stores nothing, and the record is free again at once.
	refused := errors.New("refused")
	if err := s.EditCoupling(ctx, "customer", key, actor, "uncouple", func(context.Context, domain.Coupling) (storage.CouplingEdit, error) {
		return storage.CouplingEdit{}, refused
	}); !errors.Is(err, refused) {
		t.Fatalf("a failing edit: %v, want its error", err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.RowID != row {
		t.Fatalf("a failing edit changed the coupling: %+v", c)
	}

	// While a worker holds the record, an edit is refused as busy.
	held, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			close(held)
			<-release
			return c, domain.ErrUnchanged
		})
	}()
	<-held
	err = s.EditCoupling(ctx, "customer", key, actor, "uncouple", func(context.Context, domain.Coupling) (storage.CouplingEdit, error) {
		t.Error("the edit ran while a worker held the record")
		return storage.CouplingEdit{}, nil
	})
	close(release)
	if !errors.Is(err, domain.ErrRecordBusy) {
		t.Fatalf("an edit of a held record: %v, want ErrRecordBusy", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Removing the coupling resolves the record's open errors with the reason given.
	recordChecked(t, s, errorEvent(key, "e1", 2))
	if err := s.EditCoupling(ctx, "customer", key, actor, "delete-coupling", func(context.Context, domain.Coupling) (storage.CouplingEdit, error) {
		return storage.CouplingEdit{Remove: true, Target: "customer/" + key, Resolve: "the coupling was deleted by " + actor}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.Exists || c.Version != domain.NoVersion {
		t.Fatalf("after delete-coupling: %+v, want a record never seen", c)
	}
	if c, _ := s.CouplingOfRow(ctx, "account", row); c.Exists {
		t.Fatal("the deleted coupling still owns its row")
	}
	e := onlyError(t, s, "customer", key)
	if e.Status != storage.ErrorResolved || e.ResolvedReason == nil || *e.ResolvedReason != "the coupling was deleted by "+actor {
		t.Fatalf("the record's error after delete-coupling: %s %v", e.Status, e.ResolvedReason)
	}

	// An edit that stores nothing is still audited.
	if err := s.EditCoupling(ctx, "customer", key, actor, "sync", func(context.Context, domain.Coupling) (storage.CouplingEdit, error) {
		return storage.CouplingEdit{Target: "customer/" + key + ": newest change sent again"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.Exists {
		t.Fatalf("an audit-only edit stored %+v", c)
	}
	entries, err := s.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range entries {
		if a.Actor == actor {
			actions = append(actions, a.Action+": "+a.Target)
		}
	}
	want := []string{"sync: customer/" + key + ": newest change sent again", "delete-coupling: customer/" + key + "; 1 errors resolved",
		"couple: customer/" + key + " to account " + row.String()}
	if strings.Join(actions, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log of the edits:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}
}

// A person's Couple resolves the record's open coupling errors only (ResolveClass): its setup
// errors are not fixed by a coupling and stay open.
func testACoupleResolvesOnlyCouplingErrors(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	key := "MC" + uuid.NewString()[:8]
	row := uuid.New()
	recordChecked(t, s, errorEvent(key, "coupling", 2)) // dependency_not_coupled: class coupling
	setup := errorEvent(key, "setup", 2)
	setup.Failure = *domain.MappingMissing("customer")
	recordChecked(t, s, setup)
	err := s.EditCoupling(ctx, "customer", key, "ada", "couple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		next := cur
		next.RowID, next.Entity, next.Status, next.RowVersion = row, "account", domain.CouplingSynced, domain.AnyVersion
		return storage.CouplingEdit{Next: &next, Target: "customer/" + key, Resolve: "coupled by ada", ResolveClass: domain.ClassCoupling}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListErrors(ctx, storage.ErrorFilter{Table: "customer", Key: key})
	if err != nil || len(list) != 2 {
		t.Fatalf("errors: %d, %v; want two", len(list), err)
	}
	for _, e := range list {
		want := storage.ErrorOpen
		if e.Class == domain.ClassCoupling {
			want = storage.ErrorResolved
		}
		if e.Status != want {
			t.Fatalf("%s error (%s) after a Couple: %s, want %s", e.Class, e.Kind, e.Status, want)
		}
	}
	entries, err := s.Audit(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range entries {
		found = found || a.Actor == "ada" && a.Target == "customer/"+key+"; 1 errors resolved"
	}
	if !found {
		t.Fatalf("no audit entry naming the one resolved error: %+v", entries)
	}
}
