package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

const apiPath = "/api/data/v9.2/"

// Handler serves the Web API, the token endpoint, the admin API and a page of a row.
func (e *Emulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.serveToken)
	mux.HandleFunc(apiPath, e.serveAPI)
	mux.HandleFunc("GET /main.aspx", e.serveRowView)
	e.adminRoutes(mux)
	return mux
}

// serveToken is Entra ID's client-credentials grant.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	aadError := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": code, "error_description": desc})
	}
	if r.PathValue("tenant") != e.Tenant {
		aadError(400, "invalid_request", fmt.Sprintf("AADSTS90002: Tenant '%s' not found.", r.PathValue("tenant")))
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		aadError(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if id == "" { // client_secret_basic
		id, secret, _ = r.BasicAuth()
	}
	e.mu.Lock()
	app, ok := e.apps[id]
	e.mu.Unlock()
	switch {
	case !ok:
		aadError(400, "unauthorized_client", fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory.", id))
		return
	case secret != app.ClientSecret:
		aadError(401, "invalid_client", fmt.Sprintf("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", id))
		return
	}
	tok := newToken()
	e.mu.Lock()
	ttl := e.tokenTTL
	e.tokens[tok] = token{user: app.UserID, expires: e.now().Add(ttl)}
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": int(ttl.Seconds()),
		"ext_expires_in": int(ttl.Seconds()), "access_token": tok})
}

// authenticate returns the caller, or answers 401 as Dataverse does and returns nil: an empty
// body and the WWW-Authenticate challenge naming the tenant's authority and the environment.
// The body is empty in real answers: dynamics-web-api, whose "Unexpected Error" means exactly
// that, reported it for a real 401 (github.com/AleksandrRogov/DynamicsWebApi/issues/4).
func (e *Emulator) authenticate(w http.ResponseWriter, r *http.Request) *user {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	e.mu.Lock()
	t, known := e.tokens[tok]
	u := e.users[t.user]
	e.mu.Unlock()
	if !ok || !known || e.now().After(t.expires) || u == nil {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer authorization_uri=https://login.microsoftonline.com/%s/oauth2/authorize, resource_id=%s", e.Tenant, baseURL(r)))
		w.WriteHeader(http.StatusUnauthorized)
		return nil
	}
	return u
}

var segmentRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?$`)

// recordsHeader is how a handler tells serveAPI how many records a request carried, for the
// latency model; it never leaves the emulator.
const recordsHeader = "X-Emulator-Records"

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	e.inFlight.Add(1)
	defer e.inFlight.Add(-1)
	start := e.now()
	w.Header().Set("OData-Version", "4.0")
	u := e.authenticate(w, r)
	if u == nil {
		return
	}
	if f := e.prot.nextFault(start); f != nil && applyFault(w, f) {
		return
	}
	e.prot.mu.Lock()
	limits, latency := e.prot.limits, e.prot.latency
	e.prot.mu.Unlock()
	w.Header().Set("x-ms-dop-hint", strconv.Itoa(limits.DOPHint))
	release, throttled, wait := e.prot.admit(u.id, start)
	if throttled != nil {
		w.Header().Set("Retry-After", retryAfterSeconds(wait))
		writeError(w, r, throttled)
		return
	}
	// The request runs against a recorder under the data lock; the latency is spent after the
	// lock is released, so that slow round trips do not serialize the emulator.
	rec := httptest.NewRecorder()
	// The body is read before the data lock is taken, so that a slow sender holds up no one.
	body, readErr := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	e.mu.Lock()
	switch {
	case readErr != nil:
		writeError(rec, r, errBadRequest("The request body could not be read: "+readErr.Error()))
	case u.disabled:
		writeError(rec, r, errUserDisabled())
	case u.restricted:
		writeError(rec, r, errAppRestricted(u.clientID))
	case !e.hasRoleLocked(u):
		writeError(rec, r, errNoRoles(u))
	case strings.TrimPrefix(r.URL.Path, apiPath) == "$batch" && r.Method == http.MethodPost:
		e.serveBatch(rec, r, u)
	default:
		e.dispatch(rec, r, u)
	}
	e.mu.Unlock()
	records := max(1, atoiOr(rec.Header().Get(recordsHeader), 1))
	rec.Header().Del(recordsHeader)
	time.Sleep(latency.PerRequest + time.Duration(records)*latency.PerRecord)
	release(e.now().Sub(start), records)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// dispatch serves one Web API request; the caller holds e.mu.
func (e *Emulator) dispatch(w http.ResponseWriter, r *http.Request, u *user) {
	seg := strings.TrimPrefix(r.URL.EscapedPath(), apiPath)
	seg, _ = url.PathUnescape(seg)
	if e.serveFunction(w, r, u, seg) {
		return
	}
	if set, action, ok := strings.Cut(seg, "/Microsoft.Dynamics.CRM."); ok && r.Method == http.MethodPost {
		if ent, known := e.sets[set]; known {
			if err := e.bulk(w, r, u, ent, action); err != nil {
				writeError(w, r, err)
			}
			return
		}
	}
	if set, ok := strings.CutSuffix(seg, "/$count"); ok && r.Method == http.MethodGet {
		if ent, known := e.sets[set]; known {
			if err := e.count(w, r, u, ent); err != nil {
				writeError(w, r, err)
			}
			return
		}
	}
	m := segmentRE.FindStringSubmatch(seg)
	if m == nil {
		writeError(w, r, errSegment(seg))
		return
	}
	ent, ok := e.sets[m[1]]
	if !ok {
		writeError(w, r, errSegment(m[1]))
		return
	}
	hasKey := strings.Contains(seg, "(")
	var err *apiError
	switch {
	case !hasKey && r.Method == http.MethodPost:
		err = e.create(w, r, u, ent)
	case !hasKey && r.Method == http.MethodGet:
		err = e.list(w, r, u, ent)
	case hasKey:
		key, kerr := parseKey(ent, m[2])
		if kerr != nil {
			writeError(w, r, kerr)
			return
		}
		switch r.Method {
		case http.MethodGet:
			err = e.get(w, r, u, ent, key)
		case http.MethodPatch:
			err = e.patch(w, r, u, ent, key)
		case http.MethodDelete:
			err = e.remove(w, r, u, ent, key)
		default:
			err = &apiError{405, "0x0", "The requested resource does not support http method '" + r.Method + "'.", ""}
		}
	default:
		err = &apiError{405, "0x0", "The requested resource does not support http method '" + r.Method + "'.", ""}
	}
	if err != nil {
		writeError(w, r, err)
	}
}

// rowKey is a row addressed by primary id or by alternate key values.
type rowKey struct {
	id  uuid.UUID
	alt map[string]string
}

func parseKey(ent *Entity, s string) (rowKey, *apiError) {
	if id, err := uuid.Parse(s); err == nil {
		return rowKey{id: id}, nil
	}
	alt := map[string]string{}
	for _, part := range splitOutsideQuotes(s, ",") {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return rowKey{}, errBadKey(ent)
		}
		lit, err := parseLiteral(strings.TrimSpace(val))
		if err != nil {
			return rowKey{}, errBadKey(ent)
		}
		alt[strings.TrimSpace(name)] = fmt.Sprint(lit)
	}
	if v, ok := alt[ent.PrimaryID]; ok && len(alt) == 1 {
		id, err := uuid.Parse(v)
		if err != nil {
			return rowKey{}, errBadKey(ent)
		}
		return rowKey{id: id}, nil
	}
	for _, k := range ent.AlternateKeys {
		if len(k) == len(alt) && allIn(k, alt) {
			return rowKey{alt: alt}, nil
		}
	}
	return rowKey{}, errBadKey(ent)
}

func allIn(names []string, m map[string]string) bool {
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return false
		}
	}
	return true
}

// find returns the id of the row a key addresses, or uuid.Nil.
func (e *Emulator) find(ent *Entity, key rowKey) uuid.UUID {
	if key.alt == nil {
		if _, ok := e.rows[ent.LogicalName][key.id]; ok {
			return key.id
		}
		return uuid.Nil
	}
	return e.findByKey(ent, key.alt)
}

func (e *Emulator) check(u *user, verb string, ent *Entity) *apiError {
	p := privilegeName(verb, ent)
	if !e.holdsLocked(u, p) {
		return e.errPrivilege(u, p, ent)
	}
	return nil
}

// write is a decoded request body: attribute values and lookup bindings.
type write struct {
	attrs map[string]any
	binds map[string]*uuid.UUID // lookup attribute -> target id (nil clears)
	navs  map[string]Navigation
}

// decode reads a request body the way the OData layer does: unknown properties and values of the
// wrong type fail with code 0x0 before Dataverse's own checks run.
func (e *Emulator) decode(r *http.Request, ent *Entity) (write, *apiError) {
	var body map[string]any
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		return write{}, errBadRequest("The request body is not valid JSON: " + err.Error())
	}
	return e.decodeEntry(ent, body)
}

// decodeEntry reads one entity body (a request's, or one of a bulk action's Targets).
func (e *Emulator) decodeEntry(ent *Entity, body map[string]any) (write, *apiError) {
	wr := write{attrs: map[string]any{}, binds: map[string]*uuid.UUID{}, navs: map[string]Navigation{}}
	for k, v := range body {
		if nav, ok := strings.CutSuffix(k, "@odata.bind"); ok {
			n, declared := ent.Navigations[nav]
			if !declared {
				return wr, errUndeclaredNav(nav)
			}
			wr.navs[n.Attribute] = n
			if v == nil {
				wr.binds[n.Attribute] = nil
				continue
			}
			s, _ := v.(string)
			id, aerr := e.parseBind(s, n)
			if aerr != nil {
				return wr, aerr
			}
			wr.binds[n.Attribute] = &id
			continue
		}
		if strings.HasPrefix(k, "@") || strings.Contains(k, "@") {
			continue // instance annotations such as @odata.type
		}
		a, ok := ent.Attributes[k]
		if !ok || a.Type == Lookup {
			return wr, errNoProperty(ent, k)
		}
		val, aerr := convert(a, v)
		if aerr != nil {
			return wr, aerr
		}
		wr.attrs[k] = val
	}
	return wr, nil
}

var bindRE = regexp.MustCompile(`^/?([A-Za-z_][A-Za-z0-9_]*)\(([0-9a-fA-F-]{36})\)$`)

func (e *Emulator) parseBind(s string, n Navigation) (uuid.UUID, *apiError) {
	if i := strings.Index(s, apiPath); i >= 0 { // absolute URLs are allowed too
		s = s[i+len(apiPath):]
	}
	m := bindRE.FindStringSubmatch(s)
	if m == nil {
		return uuid.Nil, errBadBind(s, n.Name)
	}
	target := e.entities[n.Target]
	if m[1] != target.EntitySet {
		return uuid.Nil, errBadBind(s, n.Name)
	}
	return uuid.MustParse(m[2]), nil
}

func convert(a Attribute, v any) (any, *apiError) {
	if v == nil {
		return nil, nil
	}
	switch a.Type {
	case String, Memo:
		s, ok := v.(string)
		if !ok {
			return nil, errConvert("Edm.String")
		}
		return s, nil
	case Boolean:
		b, ok := v.(bool)
		if !ok {
			return nil, errConvert("Edm.Boolean")
		}
		return b, nil
	case Integer, Picklist, State, Status:
		n, ok := v.(json.Number)
		i, err := n.Int64()
		if !ok || err != nil || i > math.MaxInt32 || i < math.MinInt32 {
			return nil, errConvert("Edm.Int32")
		}
		return i, nil
	case Decimal, Money:
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil {
			return nil, errConvert("Edm.Decimal")
		}
		return f, nil
	case UniqueID:
		s, _ := v.(string)
		id, err := uuid.Parse(s)
		if err != nil {
			return nil, errConvert("Edm.Guid")
		}
		return id.String(), nil
	case DateTime:
		s, _ := v.(string)
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			return nil, errConvert("Edm.DateTimeOffset")
		}
		return s, nil
	}
	return v, nil
}

// validate runs Dataverse's checks that come after the privilege check: lengths, option values,
// the existence of bound rows, alternate key uniqueness.
func (e *Emulator) validate(r *http.Request, u *user, ent *Entity, wr write, self uuid.UUID, merged row) *apiError {
	for k, v := range wr.attrs {
		a := ent.Attributes[k]
		switch a.Type {
		case String, Memo:
			if a.MaxLength > 0 && len([]rune(v.(string))) > a.MaxLength {
				return errTooLong(ent, k, a.MaxLength)
			}
		case Picklist, State, Status:
			if v != nil && !containsInt(a.Options, v.(int64)) {
				return errPicklist()
			}
		case Integer, Decimal, Money:
			if err := checkRange(ent, a, v); err != nil {
				return err
			}
		}
	}
	for attr, id := range wr.binds {
		if id == nil {
			continue
		}
		target := e.entities[wr.navs[attr].Target]
		if u != nil { // a seed file's rows need no privilege
			if err := e.check(u, "Append", ent); err != nil {
				return err
			}
			if err := e.check(u, "AppendTo", target); err != nil {
				return err
			}
		}
		if _, ok := e.rows[target.LogicalName][*id]; !ok {
			return errBoundNotFound(target, *id)
		}
	}
	if e.duplicateCurrency(ent, wr, self) {
		return errDuplicateCurrency()
	}
	keys := e.keys[ent.LogicalName]
	for _, x := range keys.alt {
		if e.other(x, ent.LogicalName, merged, self, sameKey) {
			return errDuplicateKey(ent, x.attrs)
		}
	}
	// The Web API skips duplicate detection unless the request asks for it.
	if r != nil && strings.EqualFold(r.Header.Get("MSCRM.SuppressDuplicateDetection"), "false") {
		for _, x := range keys.dup {
			if e.other(x, ent.LogicalName, merged, self, sameFold) {
				return errDuplicateDetected()
			}
		}
	}
	return nil
}

// sameFold compares the rule's attributes without regard to case, as duplicate rules do.
func sameFold(attrs []string, a, b row) bool {
	for _, k := range attrs {
		as, aok := a[k].(string)
		bs, bok := b[k].(string)
		if !aok || !bok || as == "" || !strings.EqualFold(as, bs) {
			return false
		}
	}
	return true
}

// sameKey compares an alternate key's values, text without regard to case (the collation's).
func sameKey(key []string, a, b row) bool {
	for _, k := range key {
		if a[k] == nil || b[k] == nil {
			return false
		}
		as, aText := a[k].(string)
		bs, bText := b[k].(string)
		if aText && bText {
			if foldKey(as) != foldKey(bs) {
				return false
			}
		} else if a[k] != b[k] {
			return false
		}
	}
	return true
}

func containsInt(opts []int, v int64) bool {
	for _, o := range opts {
		if int64(o) == v {
			return true
		}
	}
	return false
}

func (e *Emulator) apply(ent *Entity, r row, wr write) {
	for k, v := range wr.attrs {
		r[k] = v
	}
	for attr, id := range wr.binds {
		if id == nil {
			delete(r, attr)
		} else {
			r[attr] = *id
		}
	}
	if ent.LogicalName == "contact" {
		fullName(r)
	}
	e.defaultCurrency(ent, r)
	now := e.now().UTC().Format(time.RFC3339)
	if r["createdon"] == nil {
		r["createdon"] = now
		if r["statecode"] == nil {
			r["statecode"], r["statuscode"] = int64(0), int64(1)
		}
	}
	r["modifiedon"] = now
	r["versionnumber"] = nextVersion()
}

// update stores a changed copy of existing, the row id as it is stored now.
func (e *Emulator) update(ent *Entity, id uuid.UUID, existing row, wr write) {
	r := copyRow(existing)
	e.apply(ent, r, wr)
	e.put(ent.LogicalName, id, r)
}

// insert creates a row, with the side effects Dataverse has (a unit group gets its base unit).
func (e *Emulator) insert(ent *Entity, id uuid.UUID, wr write) {
	r := row{ent.PrimaryID: id.String()}
	e.apply(ent, r, wr)
	e.put(ent.LogicalName, id, r)
	if ent.LogicalName == "uomschedule" {
		uom := e.entities["uom"]
		sched := id
		e.insert(uom, uuid.NewSHA1(id, []byte("base unit")), write{
			attrs: map[string]any{"name": r["baseuomname"], "quantity": 1.0, "isschedulebaseuom": true},
			binds: map[string]*uuid.UUID{"uomscheduleid": &sched},
		})
	}
}

// baseURL is the environment URL as the client reached it, as a Dataverse server knows its own.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func entityURL(r *http.Request, ent *Entity, id uuid.UUID) string {
	return fmt.Sprintf("%s%s%s(%s)", baseURL(r), apiPath, ent.EntitySet, id)
}

func (e *Emulator) create(w http.ResponseWriter, r *http.Request, u *user, ent *Entity) *apiError {
	wr, err := e.decode(r, ent)
	if err != nil {
		return err
	}
	if err := e.checkRepresentation(r, ent); err != nil {
		return err
	}
	if err := e.check(u, "Create", ent); err != nil {
		return err
	}
	id := newRowID()
	if s, ok := wr.attrs[ent.PrimaryID].(string); ok {
		id = uuid.MustParse(s)
		if _, exists := e.rows[ent.LogicalName][id]; exists {
			return errDuplicateID()
		}
	}
	return e.createRow(w, r, u, ent, id, wr)
}

// createRow validates and inserts a new row and answers as a create does.
func (e *Emulator) createRow(w http.ResponseWriter, r *http.Request, u *user, ent *Entity, id uuid.UUID, wr write) *apiError {
	merged := row{}
	for k, v := range wr.attrs {
		merged[k] = v
	}
	if err := e.validate(r, u, ent, wr, id, merged); err != nil {
		return err
	}
	e.insert(ent, id, wr)
	return e.written(w, r, ent, id, http.StatusCreated)
}

// missing is the 404 for a key that addresses no row.
func missing(ent *Entity, key rowKey) *apiError {
	if key.alt != nil {
		return errKeyNotFound(ent)
	}
	return errNotFound(ent, key.id)
}

// written answers a successful create or update: 204 with OData-EntityId, or the row with
// Prefer: return=representation.
func (e *Emulator) written(w http.ResponseWriter, r *http.Request, ent *Entity, id uuid.UUID, statusWithBody int) *apiError {
	w.Header().Set("OData-EntityId", entityURL(r, ent, id))
	if wantsRepresentation(r) {
		sh, err := e.shapeOf(r, ent)
		if err != nil {
			return err
		}
		applied := "return=representation"
		if sh.annotations != nil {
			applied += "," + annotationsApplied(sh.annotations)
		}
		w.Header().Set("Preference-Applied", applied)
		out := e.shapeRow(ent, e.rows[ent.LogicalName][id], sh)
		out["@odata.context"] = fmt.Sprintf("%s%s$metadata#%s%s/$entity", baseURL(r), apiPath, ent.EntitySet, sh.contextSelection())
		writeJSON(w, statusWithBody, out)
		return nil
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (e *Emulator) patch(w http.ResponseWriter, r *http.Request, u *user, ent *Entity, key rowKey) *apiError {
	wr, err := e.decode(r, ent)
	if err != nil {
		return err
	}
	if err := e.checkRepresentation(r, ent); err != nil {
		return err
	}
	id := e.find(ent, key)
	ifMatch, ifNoneMatch := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	if id == uuid.Nil {
		if ifMatch != "" {
			return missing(ent, key)
		}
		if err := e.check(u, "Create", ent); err != nil {
			return err
		}
		id = key.id
		if key.alt != nil {
			id = newRowID()
			for k, v := range key.alt { // key values from the URL win on create
				wr.attrs[k] = v
			}
		}
		return e.createRow(w, r, u, ent, id, wr)
	}
	if ifNoneMatch == "*" {
		return errDuplicateID()
	}
	existing := e.rows[ent.LogicalName][id]
	if ifMatch != "" && ifMatch != "*" && ifMatch != etag(existing) {
		return errVersionMismatch()
	}
	if err := e.check(u, "Write", ent); err != nil {
		return err
	}
	merged := row{}
	for k, v := range existing {
		merged[k] = v
	}
	for k, v := range wr.attrs {
		merged[k] = v
	}
	if err := e.validate(r, u, ent, wr, id, merged); err != nil {
		return err
	}
	e.update(ent, id, existing, wr)
	return e.written(w, r, ent, id, http.StatusOK)
}

func (e *Emulator) remove(w http.ResponseWriter, r *http.Request, u *user, ent *Entity, key rowKey) *apiError {
	id := e.find(ent, key)
	if err := e.check(u, "Delete", ent); err != nil {
		return err
	}
	if id == uuid.Nil {
		return missing(ent, key)
	}
	if m := r.Header.Get("If-Match"); m != "" && m != "*" && m != etag(e.rows[ent.LogicalName][id]) {
		return errVersionMismatch()
	}
	e.put(ent.LogicalName, id, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (e *Emulator) get(w http.ResponseWriter, r *http.Request, u *user, ent *Entity, key rowKey) *apiError {
	if err := e.check(u, "Read", ent); err != nil {
		return err
	}
	sh, aerr := e.shapeOf(r, ent)
	if aerr != nil {
		return aerr
	}
	id := e.find(ent, key)
	if id == uuid.Nil {
		return missing(ent, key)
	}
	raw := e.rows[ent.LogicalName][id]
	// A conditional GET of an unchanged row is 304, except with $expand or annotations, whose
	// related values the ETag does not cover.
	// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag(raw) && sh.expand == nil && sh.annotations == nil {
		w.Header().Set("ETag", inm)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	out := e.shapeRow(ent, raw, sh)
	out["@odata.context"] = fmt.Sprintf("%s%s$metadata#%s%s/$entity", baseURL(r), apiPath, ent.EntitySet, sh.contextSelection())
	if sh.annotations != nil {
		w.Header().Set("Preference-Applied", annotationsApplied(sh.annotations))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// matching returns the rendered rows of ent that a request's $filter keeps; the caller checked
// the Read privilege.
func (e *Emulator) matching(r *http.Request, ent *Entity) ([]map[string]any, *apiError) {
	var cond filter
	if f := odataQuery(r).Get("$filter"); f != "" {
		var err error
		if cond, err = parseFilter(f); err != nil {
			return nil, errBadRequest("Syntax error in $filter: " + err.Error())
		}
		if aerr := checkFilter(ent, cond); aerr != nil {
			return nil, aerr
		}
	}
	rows := e.rows[ent.LogicalName]
	if cond != nil {
		if ids, ok := e.keys[ent.LogicalName].candidates(cond, rows); ok {
			all := make([]map[string]any, 0, len(ids))
			for id := range ids {
				if full := render(ent, rows[id], nil); cond.match(full) {
					all = append(all, full)
				}
			}
			return all, nil
		}
	}
	all := make([]map[string]any, 0, len(rows))
	for _, rw := range rows {
		full := render(ent, rw, nil)
		if cond == nil || cond.match(full) {
			all = append(all, full)
		}
	}
	return all, nil
}

// maxCount is the most @odata.count and /$count report for a standard table.
// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/count-rows
const maxCount = 5000

// count answers GET /<entityset>/$count: the number of rows matching $filter, as text/plain.
func (e *Emulator) count(w http.ResponseWriter, r *http.Request, u *user, ent *Entity) *apiError {
	if err := e.check(u, "Read", ent); err != nil {
		return err
	}
	all, err := e.matching(r, ent)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, min(len(all), maxCount))
	return nil
}

func (e *Emulator) list(w http.ResponseWriter, r *http.Request, u *user, ent *Entity) *apiError {
	if err := e.check(u, "Read", ent); err != nil {
		return err
	}
	q := odataQuery(r)
	sh, aerr := e.shapeOf(r, ent)
	if aerr != nil {
		return aerr
	}
	top := -1
	if t := q.Get("$top"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return errBadRequest("Invalid value for $top query option: " + t)
		}
		top = n
	}
	keys, err := orderKeys(ent, q.Get("$orderby"))
	if err != nil {
		return errBadRequest(err.Error())
	}
	if aerr := checkOrder(ent, keys); aerr != nil {
		return aerr
	}
	all, aerr := e.matching(r, ent)
	if aerr != nil {
		return aerr
	}
	sortRows(keys, all)
	body := map[string]any{"@odata.context": fmt.Sprintf("%s%s$metadata#%s%s", baseURL(r), apiPath, ent.EntitySet, sh.contextSelection())}
	if q.Get("$count") == "true" {
		// The count is of the rows matching $filter, whatever the page size or $top.
		body["@odata.count"] = min(len(all), maxCount)
	}
	if top >= 0 && top < len(all) {
		all = all[:top]
	}
	page := 1
	if tok := q.Get("$skiptoken"); tok != "" {
		last, aerr := afterCookie(ent, keys, tok)
		if aerr != nil {
			return aerr
		}
		page = pageNumber(tok)
		all = rowsAfter(keys, all, last)
	}
	size := maxPageSize(r.Header.Values("Prefer"))
	rows := all[:min(size, len(all))]
	if len(rows) < len(all) {
		tok := pagingCookie(ent, keys, page, rows[0], rows[len(rows)-1])
		body["@odata.nextLink"] = nextLinkAfter(baseURL(r)+apiPath+ent.EntitySet, q, tok)
	}
	var applied []string
	if size < 5000 {
		applied = append(applied, fmt.Sprintf("odata.maxpagesize=%d", size))
	}
	if sh.annotations != nil {
		applied = append(applied, annotationsApplied(sh.annotations))
	}
	if applied != nil {
		w.Header().Set("Preference-Applied", strings.Join(applied, ","))
	}
	value := make([]map[string]any, 0, len(rows))
	for _, full := range rows {
		id := uuid.MustParse(full[ent.PrimaryID].(string))
		value = append(value, e.shapeRow(ent, e.rows[ent.LogicalName][id], sh))
	}
	body["value"] = value
	writeJSON(w, http.StatusOK, body)
	return nil
}

func selectOf(r *http.Request) []string {
	s := odataQuery(r).Get("$select")
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func etag(r row) string { return fmt.Sprintf(`W/"%d"`, r["versionnumber"]) }

// render writes a row as the Web API returns it: lookups as _<name>_value, an @odata.etag, and
// only the selected columns (plus the primary id) when $select is given.
func render(ent *Entity, r row, sel []string) map[string]any {
	keep, size := kept(ent, sel), len(r)+1
	if keep != nil {
		size = len(keep)
	}
	out := make(map[string]any, size)
	out["@odata.etag"] = etag(r)
	for k, v := range r {
		name := k
		if ent.Attributes[k].Type == Lookup {
			name = "_" + k + "_value"
			v = fmt.Sprint(v)
		}
		if keep == nil || keep[name] {
			out[name] = v
		}
	}
	return out
}

// kept is the set of columns a $select keeps, with the primary id and the etag; nil keeps all.
func kept(ent *Entity, sel []string) map[string]bool {
	if sel == nil {
		return nil
	}
	keep := map[string]bool{ent.PrimaryID: true, "@odata.etag": true}
	for _, s := range sel {
		s = strings.TrimSpace(s)
		keep[s] = true
		// A money column comes with the row's currency, which gives the amount its meaning.
		// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns
		if ent.Attributes[s].Type == Money && ent.Attributes["transactioncurrencyid"].Type == Lookup {
			keep["_transactioncurrencyid_value"] = true
		}
	}
	return keep
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}
