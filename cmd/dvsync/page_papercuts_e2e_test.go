package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
)

// On the setup tab, in a real browser: the filters are choices, kinds are in words and times
// carry their zone; a Retry, and a Retry of all shown after its confirmation, come back to the
// setup tab; an error's own page has Retry (back to that page) and Delete (back to its list); a
// coupled record's Dataverse row opens the emulator's page of the row.
func TestPageSetupTabAndErrorPageInABrowser(t *testing.T) {
	h := startManualReplay(t)
	base := h.api()
	if err := h.emu.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateAccount", false); err != nil {
		t.Fatal(err)
	}
	cust := h.key("C82000")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Setup tab"})
	e := h.openError("customer", cust, domain.KindMissingPrivilege)
	// Any status: a retried error is replayed, no longer open, and stays listed.
	list := base + "/errors?class=setup&status=&q=" + cust
	card := fmt.Sprintf("#error-%d", e.ID)

	ctx := browser(t)
	var kind, seen, search, current, flash string
	var kinds []string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(list),
		chromedp.WaitVisible("#token", chromedp.ByID),
		chromedp.SendKeys("#token", testOperatorToken, chromedp.ByID),
		chromedp.Submit("#token", chromedp.ByID),
		chromedp.WaitVisible(`nav[aria-label="Main"]`, chromedp.ByQuery),
		chromedp.Navigate(list),
		chromedp.WaitVisible(card, chromedp.ByQuery),
		chromedp.Text(card+" .kind", &kind, chromedp.ByQuery),
		chromedp.Text(card+" .meta", &seen, chromedp.ByQuery),
		chromedp.Evaluate(`[...document.querySelectorAll('select[name="kind"] option')].map(o => o.textContent)`, &kinds),
		// Choose a kind and filter: the choice is in the URL, the error still shown.
		chromedp.SetValue(`select[name="kind"]`, string(domain.KindMissingPrivilege), chromedp.ByQuery),
		clickAndWait(`form.filters button[type="submit"]`),
		chromedp.WaitVisible(card, chromedp.ByQuery),
		chromedp.Evaluate(`location.search`, &search),
	); err != nil {
		d, gerr := h.store.GetError(t.Context(), e.ID)
		var u string
		_ = chromedp.Run(ctx, chromedp.Evaluate(`location.href`, &u))
		t.Fatalf("%v; the error: %s replays %d log %+v %v; at %s", err, d.Status, d.Replays, d.ReplayLog, gerr, u)
	}
	if kind != "Missing privilege" || !strings.Contains(seen, " UTC") || !strings.Contains(strings.Join(kinds, ","), "Missing privilege") ||
		strings.Contains(strings.Join(kinds, ","), "Dependency not coupled") || !strings.Contains(search, "kind=missing_privilege") || !strings.Contains(search, "class=setup") {
		t.Fatalf("the setup tab: kind %q, seen %q, kinds %q, search %q", kind, seen, kinds, search)
	}
	shot(t, ctx, "setup-tab")

	for _, step := range []struct {
		name, flash string
		actions     chromedp.Tasks
	}{
		{"Retry", fmt.Sprintf("Error %d", e.ID), chromedp.Tasks{clickAndWait(card + " button.retry")}},
		{"Retry all shown", "errors replayed", chromedp.Tasks{
			clickAndWait(`form[action="/errors/replay-shown"] button`),
			clickAndWait(`#confirm-button`),
		}},
	} {
		if err := chromedp.Run(ctx, step.actions,
			chromedp.Text(".flash", &flash, chromedp.ByQuery),
			chromedp.Evaluate(`location.search`, &search),
			chromedp.Text(`nav a[aria-current="page"]`, &current, chromedp.ByQuery),
		); err != nil {
			t.Fatal(err)
		}
		if current != "Setup errors" || !strings.Contains(search, "class=setup") || !strings.Contains(search, "kind=missing_privilege") || !strings.Contains(flash, step.flash) {
			t.Fatalf("after %s: on %q, search %q, flash %q", step.name, current, search, flash)
		}
	}

	// The error's own page: Retry comes back to it, Delete goes to its list.
	var path, heading string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(fmt.Sprintf("%s/errors/%d", base, e.ID)),
		chromedp.WaitVisible("main h1", chromedp.ByQuery),
		clickAndWait("main button.retry"),
		chromedp.Text(".flash", &flash, chromedp.ByQuery),
		chromedp.Evaluate(`location.pathname`, &path),
		chromedp.Text("main h1", &heading, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if path != fmt.Sprintf("/errors/%d", e.ID) || !strings.Contains(flash, fmt.Sprintf("Error %d", e.ID)) || !strings.Contains(heading, cust) {
		t.Fatalf("Retry on the error's page: at %s, flash %q, heading %q", path, flash, heading)
	}
	if err := chromedp.Run(ctx,
		clickAndWait("main button.delete"),
		chromedp.Text(".flash", &flash, chromedp.ByQuery),
		chromedp.Evaluate(`location.pathname + location.search`, &path),
		chromedp.Text(`nav a[aria-current="page"]`, &current, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, "/errors?") || current != "Setup errors" || flash != fmt.Sprintf("Error %d deleted.", e.ID) {
		t.Fatalf("Delete on the error's page: at %s (%s), flash %q", path, current, flash)
	}
	if _, err := h.store.GetError(t.Context(), e.ID); err == nil {
		t.Fatal("the deleted error is still stored")
	}

	// With the privilege granted back a record syncs, and its Dataverse row opens in the emulator.
	if err := h.emu.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateAccount", true); err != nil {
		t.Fatal(err)
	}
	synced := h.key("C83000")
	h.publish("customer", synced, 2, map[string]any{"number": synced, "displayName": "Setup tab <fixed>"})
	c := h.waitCoupled("customer", synced, 2)
	var version, rowPage, origin string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/couplings?q="+synced),
		chromedp.WaitVisible("td.version", chromedp.ByQuery),
		chromedp.Text("td.version", &version, chromedp.ByQuery),
		clickAndWait(`a[rel="noopener"]`),
		chromedp.Evaluate(`location.origin`, &origin),
		chromedp.Text("body", &rowPage, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if version != "2" || origin != h.cfg.Dataverse.URL || !strings.Contains(rowPage, "Setup tab <fixed>") || !strings.Contains(rowPage, c.RowID.String()) {
		t.Fatalf("the Dataverse row: version %q, at %s: %q", version, origin, rowPage)
	}
	shot(t, ctx, "emulator-row")
}

// clickAndWait clicks what navigates (a form's button, a link) and waits for the page it leads to.
func clickAndWait(sel string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(sel, chromedp.ByQuery))
		if err == nil && resp.Status >= 400 {
			err = fmt.Errorf("clicking %s led to %d %s", sel, resp.Status, resp.URL)
		}
		return err
	})
}
