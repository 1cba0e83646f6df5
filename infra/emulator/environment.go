package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// What makes the emulator start like a provisioned Dataverse environment rather than an empty
// one: the organization, its base currency (every environment has one from the day it was
// provisioned), rows loaded from a seed file, and application users an administrator has
// restricted from the API.

// Currency is the base currency an environment is provisioned with.
type Currency struct {
	ISOCode string `json:"isoCurrencyCode"`
	Name    string `json:"currencyName"`
	Symbol  string `json:"currencySymbol"`
}

// DefaultBaseCurrency is the base currency of a new emulated environment.
var DefaultBaseCurrency = Currency{ISOCode: "USD", Name: "US Dollar", Symbol: "$"}

// organizationID is the emulated organization's id, as WhoAmI answers it.
var organizationID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("organization"))

// insertBaseCurrencyLocked creates the base currency row, replacing one there is. The caller
// holds e.mu.
func (e *Emulator) insertBaseCurrencyLocked() {
	ent := e.entities["transactioncurrency"]
	if ent == nil || e.base.ISOCode == "" {
		return
	}
	e.put(ent.LogicalName, e.baseCurrencyID, nil)
	e.insert(ent, e.baseCurrencyID, write{attrs: map[string]any{
		"isocurrencycode": e.base.ISOCode, "currencyname": e.base.Name, "currencysymbol": e.base.Symbol,
		"exchangerate": 1.0, "currencyprecision": int64(2),
	}})
}

// SetBaseCurrency provisions the environment with another base currency (USD by default): its
// row replaces the base currency row, and Reset restores it. An empty ISO code leaves the
// environment without one, as no real environment is.
func (e *Emulator) SetBaseCurrency(c Currency) error {
	if n := len([]rune(c.ISOCode)); n > 5 {
		return fmt.Errorf("emulator: a currency code has at most 5 characters, not %d", n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.base = c
	if c.ISOCode == "" {
		e.put("transactioncurrency", e.baseCurrencyID, nil)
		return nil
	}
	e.insertBaseCurrencyLocked()
	return nil
}

// BaseCurrency returns the base currency row's id and ISO code.
func (e *Emulator) BaseCurrency() (uuid.UUID, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.rows["transactioncurrency"][e.baseCurrencyID]; !ok {
		return uuid.Nil, ""
	}
	return e.baseCurrencyID, e.base.ISOCode
}

// LoadSeed loads existing rows into any table, as a Dataverse environment people already work in
// has them. The file maps an entity set or logical name to rows written as a Web API create body:
// columns by logical name, lookups as "<navigation>@odata.bind": "/<set>(<id>)", and the primary
// id when the row must have a known one. Rows are checked as a create checks them (types,
// lengths, options, alternate keys, the rows they bind to, earlier rows of the file included)
// but need no privilege. The file loads whole or not at all.
//
//	{"accounts": [{"accountid": "…", "name": "Contoso", "accountnumber": "C10000"}]}
func (e *Emulator) LoadSeed(data []byte) error {
	var file map[string][]map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&file); err != nil {
		return fmt.Errorf("emulator: seed: the file is not {\"<table>\": [rows]}: %w", err)
	}
	tables := make([]string, 0, len(file))
	for t := range file {
		tables = append(tables, t)
	}
	// Tables load in an order that lets rows bind to rows of tables they depend on: those with
	// fewer lookups first, then by name, so that a file loads the same way every time.
	e.mu.Lock()
	defer e.mu.Unlock()
	ents := map[string]*Entity{}
	for _, t := range tables {
		ent := e.sets[t]
		if ent == nil {
			ent = e.entities[t]
		}
		if ent == nil {
			return fmt.Errorf("emulator: seed: no table %q (an entity set or logical name)", t)
		}
		ents[t] = ent
	}
	sort.Slice(tables, func(i, j int) bool {
		a, b := len(ents[tables[i]].Navigations), len(ents[tables[j]].Navigations)
		return a < b || a == b && tables[i] < tables[j]
	})
	mark, committed := e.begin(), false
	defer func() { e.end(mark, committed) }()
	for _, t := range tables {
		for i, body := range file[t] {
			if err := e.seedRow(ents[t], body); err != nil {
				return fmt.Errorf("emulator: seed: %s row %d: %w", t, i+1, err)
			}
		}
	}
	committed = true
	return nil
}

func (e *Emulator) seedRow(ent *Entity, body map[string]any) error {
	wr, aerr := e.decodeEntry(ent, body)
	if aerr != nil {
		return aerr
	}
	id := newRowID()
	if s, ok := wr.attrs[ent.PrimaryID].(string); ok {
		id = uuid.MustParse(s)
		if _, exists := e.rows[ent.LogicalName][id]; exists {
			return errDuplicateID()
		}
	}
	merged := row{}
	for k, v := range wr.attrs {
		merged[k] = v
	}
	if aerr := e.validate(nil, nil, ent, wr, id, merged); aerr != nil {
		return aerr
	}
	e.insert(ent, id, wr)
	return nil
}

// errDuplicateCurrency is Dataverse's answer to a second currency with an ISO code one has
// already (DuplicateIsoCurrencyCode, 0x80048cf3, as the SDK's error codes name it). The HTTP
// status is not confirmed against a real response; platform validation errors answer 400.
func errDuplicateCurrency() *apiError {
	return &apiError{400, "0x80048cf3", "Cannot insert duplicate currency record. Currency with the same currency code already exist in the system.", "DuplicateIsoCurrencyCode"}
}

// duplicateCurrency reports whether another currency than self has the ISO code a write sets.
// Dataverse checks it on the currency itself, before any alternate key.
func (e *Emulator) duplicateCurrency(ent *Entity, wr write, self uuid.UUID) bool {
	if ent.LogicalName != "transactioncurrency" {
		return false
	}
	code, ok := wr.attrs["isocurrencycode"].(string)
	if !ok || code == "" {
		return false
	}
	for id, r := range e.rows[ent.LogicalName] {
		if id != self && strings.EqualFold(fmt.Sprint(r["isocurrencycode"]), code) {
			return true
		}
	}
	return false
}

// errAppRestricted is Dataverse's answer to every request of an application an administrator has
// restricted from the Dataverse API: the app is blocked, not short of a privilege.
func errAppRestricted(clientID string) *apiError {
	return &apiError{403, "0x80095ffc", fmt.Sprintf("Access to Dataverse API is restricted for this application Id : '%s'. Please contact your administrator for more information.", clientID), ""}
}

// RestrictApp restricts an app registration from the Dataverse API, or lifts the restriction, as
// an administrator does in the Power Platform admin center.
func (e *Emulator) RestrictApp(clientID string, restricted bool) error {
	e.mu.Lock()
	a, ok := e.apps[clientID]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("emulator: no app %s", clientID)
	}
	return e.changeUser(a.UserID, func(u *user) { u.restricted = restricted })
}

// environmentRoutes are the admin routes of a provisioned environment (see adminRoutes).
func (e *Emulator) environmentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /_emulator/seed", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err == nil {
			err = e.LoadSeed(data)
		}
		if err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_emulator/base-currency", func(w http.ResponseWriter, r *http.Request) {
		var c Currency
		if !decodeAdmin(w, r, &c) {
			return
		}
		if err := e.SetBaseCurrency(c); err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	for action, restricted := range map[string]bool{"restrict": true, "unrestrict": false} {
		mux.HandleFunc("POST /_emulator/apps/{clientId}/"+action, func(w http.ResponseWriter, r *http.Request) {
			if err := e.RestrictApp(r.PathValue("clientId"), restricted); err != nil {
				adminError(w, http.StatusNotFound, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
}
