package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// A person's coupling actions in a real browser, against the whole stack and the emulator:
// Restore and Delete coupling from the page of a destination_deleted error, Uncouple and Couple
// from the coupled-records page, each after a confirmation step.
func TestCouplingActionsInABrowser(t *testing.T) {
	h := startManualReplay(t)
	base := h.api()
	a, b := h.key("C90000"), h.key("C91000")
	h.publish("customer", a, 1, map[string]any{"number": a, "displayName": "Restore me"})
	h.publish("customer", b, 1, map[string]any{"number": b, "displayName": "Couple me"})
	rowA := h.waitCoupled("customer", a, 1).RowID
	rowB := h.waitCoupled("customer", b, 1).RowID

	// The account is deleted in Dataverse; the next change of the record fails.
	rowDeleted := func(version int64) storage.StoredError {
		t.Helper()
		if err := h.emu.DeleteRow("accounts", rowA); err != nil {
			t.Fatal(err)
		}
		h.publish("customer", a, version, map[string]any{"number": a, "displayName": fmt.Sprintf("Restore me v%d", version)})
		var found storage.StoredError
		h.eventually(fmt.Sprintf("an open destination_deleted error of version %d", version), func() bool {
			list, err := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: a, Status: storage.ErrorOpen})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range list {
				if e.Kind == domain.KindDestinationDeleted && e.EventVersion != nil && *e.EventVersion == version {
					found = e
					return true
				}
			}
			return false
		})
		return found
	}
	e := rowDeleted(2)

	ctx := browser(t)
	var done string
	// act clicks an action's button, confirms it, and reads what the result page says.
	act := func(page, button string) string {
		t.Helper()
		var out string
		if err := chromedp.Run(ctx,
			chromedp.Navigate(base+page),
			chromedp.WaitVisible(button, chromedp.ByQuery),
			chromedp.Click(button, chromedp.ByQuery),
			chromedp.WaitVisible("#confirm-button", chromedp.ByID),
			chromedp.Click("#confirm-button", chromedp.ByID),
			chromedp.WaitVisible("#back", chromedp.ByID),
			chromedp.Text("main", &out, chromedp.ByQuery),
		); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := chromedp.Run(ctx, browserSignIn(base+"/login", testOperatorToken, "main h1")); err != nil {
		t.Fatal(err)
	}

	// Restore: the row is created again with the record's id, and the record is coupled to it.
	done = act(fmt.Sprintf("/errors/%d", e.ID), "button.restore")
	if !strings.Contains(done, "is being restored") {
		t.Fatalf("after Restore the page says %q", done)
	}
	shot(t, ctx, "coupling-restore")
	c := h.waitCoupled("customer", a, 2)
	if c.RowID != rowA || h.emu.Row("accounts", rowA) == nil {
		t.Fatalf("after Restore: coupled to %s (was %s), row in Dataverse: %v", c.RowID, rowA, h.emu.Row("accounts", rowA) != nil)
	}
	h.eventually("the destination_deleted error to be resolved", func() bool {
		d, err := h.store.GetError(context.Background(), e.ID)
		return err == nil && d.Status == storage.ErrorResolved
	})

	// Delete coupling: the coupling goes, the error is resolved.
	e = rowDeleted(3)
	done = act(fmt.Sprintf("/errors/%d", e.ID), "button.delete-coupling")
	if !strings.Contains(done, "is deleted") {
		t.Fatalf("after Delete coupling the page says %q", done)
	}
	if c := h.coupling("customer", a); c.Exists {
		t.Fatalf("after Delete coupling: %+v", c)
	}
	if d, err := h.store.GetError(context.Background(), e.ID); err != nil || d.Status != storage.ErrorResolved {
		t.Fatalf("the error after Delete coupling: %s, %v", d.Status, err)
	}

	// Uncouple from the coupled-records page, then Couple again to the same row by its id.
	list := "/couplings?" + url.Values{"q": {b}}.Encode()
	done = act(list, "button.uncouple")
	if !strings.Contains(done, `is uncoupled from account "Couple me" (`+rowB.String()+")") {
		t.Fatalf("after Uncouple the page says %q", done)
	}
	if c := h.coupling("customer", b); c.Coupled() || c.Status != domain.CouplingUncoupled {
		t.Fatalf("after Uncouple: %+v", c)
	}
	if err := chromedp.Run(ctx,
		chromedp.Navigate(base+list),
		chromedp.WaitVisible(`input[name="row_id"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="row_id"]`, rowB.String(), chromedp.ByQuery),
		chromedp.Click("button.couple", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm-button", chromedp.ByID),
		chromedp.Click("#confirm-button", chromedp.ByID),
		chromedp.WaitVisible("#back", chromedp.ByID),
		chromedp.Text("main", &done, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(done, "is coupled to account "+rowB.String()) {
		t.Fatalf("after Couple the page says %q", done)
	}
	if c := h.coupling("customer", b); !c.Coupled() || c.RowID != rowB {
		t.Fatalf("after Couple: %+v", c)
	}
	// Coupling another record to that row is refused with Business Central's words.

	var refused string
	h.publish("customer", a, 4, map[string]any{"number": a})
	h.waitCoupled("customer", a, 4)
	if err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/couplings?"+url.Values{"q": {a}}.Encode()),
		chromedp.WaitVisible("button.uncouple", chromedp.ByQuery),
		chromedp.Click("button.uncouple", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm-button", chromedp.ByID),
		chromedp.Click("#confirm-button", chromedp.ByID),
		chromedp.WaitVisible("#back", chromedp.ByID),
		chromedp.Navigate(base+"/couplings?"+url.Values{"q": {a}}.Encode()),
		chromedp.WaitVisible(`input[name="row_id"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="row_id"]`, rowB.String(), chromedp.ByQuery),
		chromedp.Click("button.couple", chromedp.ByQuery),
		chromedp.WaitVisible("#confirm-button", chromedp.ByID),
		chromedp.Click("#confirm-button", chromedp.ByID),
		chromedp.WaitVisible(".problem", chromedp.ByQuery),
		chromedp.Text(".problem", &refused, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Cannot couple customer %s to this account record, because the account record is already coupled to customer %s.", a, b)
	if !strings.Contains(refused, want) {
		t.Fatalf("coupling a taken row: %q, want %q", refused, want)
	}
	if c := h.coupling("customer", a); c.Coupled() {
		t.Fatalf("a refused Couple coupled the record: %+v", c)
	}

}
