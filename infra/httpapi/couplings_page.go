package httpapi

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// The coupling actions on the page: buttons on the coupled-records page and on an error's page
// post to /couplings/{table}/{key}/{action}, which asks for confirmation and then shows what the
// action did.

// ActionPath is where a coupling action's form posts for a record.
func (d pageData) ActionPath(table, key, command string) string {
	return "/couplings/" + url.PathEscape(table) + "/" + url.PathEscape(key) + "/" + command
}

// Actions are the coupling actions by command, for the templates: their buttons' words.
func (d pageData) Actions() map[string]string {
	out := map[string]string{}
	for _, a := range domain.CouplingActions {
		out[a.Command] = a.Button
	}
	return out
}

// RowDeleted reports whether a coupling's Dataverse row was deleted there (Restore applies).
func (d pageData) RowDeleted(c domain.Coupling) bool {
	return c.Coupled() && c.LastErrorKind == domain.KindDestinationDeleted
}

// ErrorActions are the coupling actions an error's page offers for its record, by its kind.
func (d pageData) ErrorActions(e storage.StoredError) []string {
	if e.Class != domain.ClassCoupling || e.Status == storage.ErrorResolved {
		return nil
	}
	switch e.Kind {
	case domain.KindDestinationDeleted:
		return []string{domain.ActionRestore.Command, domain.ActionDeleteCoupling.Command}
	case domain.KindSourceDeleted:
		return []string{domain.ActionDeleteCoupling.Command}
	}
	return []string{domain.ActionSyncNow.Command}
}

// OffersCouple reports whether an error's page offers to couple its record to a given row, where
// the advice asks for it: a duplicate in Dataverse is coupled to the row that exists, a record
// with several matches or none to the row a person chooses.
func (d pageData) OffersCouple(e storage.StoredError) bool {
	if e.Class != domain.ClassCoupling || e.Status == storage.ErrorResolved {
		return false
	}
	switch e.Kind {
	case domain.KindDuplicateRecord, domain.KindMultipleMatches, domain.KindNoMatch:
		return true
	}
	return false
}

func actionOf(command string) (domain.CouplingAction, bool) {
	for _, a := range domain.CouplingActions {
		if a.Command == command {
			return a, true
		}
	}
	return domain.CouplingAction{}, false
}

// couplingForm runs a coupling action from the page after a confirmation step, and shows what it
// did (or why it was refused) with a way back.
func (s *Server) couplingForm(w http.ResponseWriter, r *http.Request, d pageData) {
	a, ok := actionOf(r.PathValue("action"))
	if !ok || validText(r.PathValue, "table", "key") != nil {
		http.NotFound(w, r)
		return
	}
	table, key := r.PathValue("table"), r.PathValue("key")
	record := table + " " + key
	var question string
	var row uuid.UUID
	switch a {
	case domain.ActionCouple:
		var err error
		if row, err = uuid.Parse(r.PostFormValue("row_id")); err != nil {
			d.Title, d.Problem = "Couple "+record, fmt.Sprintf("%q is not a Dataverse row id (a GUID such as 6f0e3f43-3c1d-4b8e-9a55-0d5b1c2f7a10).", r.PostFormValue("row_id"))
			back := returnTo(r)
			d.Back = back.String()
			s.renderStatus(w, http.StatusBadRequest, "coupling_result.html", d)
			return
		}
		question = fmt.Sprintf("Couple %s to the Dataverse row %s? Its next change updates that row.", record, row)
	case domain.ActionUncouple:
		question = fmt.Sprintf("Uncouple %s from its Dataverse row? The row stays in Dataverse; the record's open errors are resolved.", record)
	case domain.ActionSyncNow:
		question = fmt.Sprintf("Send the newest change of %s again now?", record)
	case domain.ActionRestore:
		question = fmt.Sprintf("Restore %s: create its deleted Dataverse row again and couple it?", record)
	case domain.ActionDeleteCoupling:
		question = fmt.Sprintf("Delete the coupling of %s? The record is then as if never synced; a Dataverse row stays.", record)
	}
	if !s.confirmed(w, r, d, a.Button+" "+record, question, a.Button, "row_id") {
		return
	}
	var res struct{ Message string }
	var err error
	if a == domain.ActionCouple {
		if s.Coupling == nil {
			err = errNoActions
		} else {
			cr, e := s.Coupling.Couple(r.Context(), table, key, row, d.User)
			res.Message, err = cr.Message, e
		}
	} else {
		rr, e := s.runAction(r.Context(), a, table, key, d.User)
		res.Message, err = rr.Message, e
	}
	back := returnTo(r)
	d.Title, d.Back = a.Button+" "+record, back.String()
	status := http.StatusOK
	if err != nil {
		var title string
		status, title, d.Problem = actionFailure(err)
		d.Problem = title + ": " + d.Problem
		if status == http.StatusServiceUnavailable {
			s.logWarn("coupling action failed", err)
		}
	} else {
		d.Question = res.Message
	}
	s.renderStatus(w, status, "coupling_result.html", d)
}
