package dataverse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"github.com/dvsync/dvsync/domain"
)

// APIPath is the Web API root under the environment URL.
const APIPath = "/api/data/v9.2/"

// Client talks to one Dataverse environment as one application user.
type Client struct {
	base           string // environment URL + APIPath
	http           *http.Client
	tokens         oauth2.TokenSource
	observe        RequestObserver
	gate           gate
	limit          *limiter
	writeHeaders   http.Header // optional headers sent on every write
	onThrottle     func(until time.Time)
	onThrottleCode func(code string)
}

// NewClient returns a client of the environment at environmentURL (https://<org>.crm.dynamics.com).
func NewClient(environmentURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(environmentURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("dataverse: environment URL %q is not an http(s) URL", environmentURL)
	}
	c := &Client{base: strings.TrimRight(environmentURL, "/") + APIPath, limit: newLimiter(52), writeHeaders: http.Header{}}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second, Transport: NewTransport(c.limit.max)}
	}
	return c, nil
}

// NewTransport is an HTTP transport that keeps idlePerHost connections to Dataverse open between
// requests. Go's default keeps two, so that under load most requests paid for a new TLS connection.
func NewTransport(idlePerHost int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(idlePerHost, 2)
	t.MaxIdleConns = max(t.MaxIdleConns, t.MaxIdleConnsPerHost)
	return t
}

var _ domain.Dataverse = (*Client)(nil)

// entityID matches the id in an OData-EntityId header: .../accounts(00000000-0000-0000-0000-000000000001).
var entityID = regexp.MustCompile(`\(([0-9a-fA-F-]{36})\)$`)

// Create creates a row and returns its id from the OData-EntityId header.
func (c *Client) Create(ctx context.Context, entitySet string, attrs domain.Attributes) (uuid.UUID, error) {
	resp, err := c.do(ctx, http.MethodPost, entitySet, entitySet, attrs, nil)
	if err != nil {
		return uuid.Nil, err
	}
	m := entityID.FindStringSubmatch(resp.Header.Get("OData-EntityId"))
	if m == nil {
		return uuid.Nil, fmt.Errorf("dataverse: create %s: no row id in OData-EntityId %q", entitySet, resp.Header.Get("OData-EntityId"))
	}
	return uuid.Parse(m[1])
}

// CreateRow creates the row with the given id (PATCH with If-None-Match: *); Dataverse answers
// 412 (0x80040237) when it exists. It returns the new row's version.
func (c *Client) CreateRow(ctx context.Context, row domain.RowRef, attrs domain.Attributes) (string, error) {
	return writtenVersion(c.exec(ctx, createRowRequest(row, attrs)))
}

// UpdateRow updates an existing row whose version is still ifMatch (domain.AnyVersion: any).
// Dataverse answers 404 when the row is missing and 412 (0x80060882) when its version moved on.
// It returns the row's new version.
func (c *Client) UpdateRow(ctx context.Context, row domain.RowRef, attrs domain.Attributes, ifMatch string) (string, error) {
	return writtenVersion(c.exec(ctx, updateRowRequest(row, attrs, ifMatch)))
}

// RowVersion reads a row's current version; found is false when the row does not exist.
func (c *Client) RowVersion(ctx context.Context, row domain.RowRef) (string, bool, error) {
	return foundVersion(c.exec(ctx, rowVersionRequest(row)))
}

// DeleteRow deletes a row whose version is still ifMatch (domain.AnyVersion: any); missing and
// changed rows fail as UpdateRow's do.
func (c *Client) DeleteRow(ctx context.Context, row domain.RowRef, ifMatch string) error {
	_, err := c.exec(ctx, deleteRowRequest(row, ifMatch))
	return err
}

// rowRequest is one call of the domain port, as the single methods send it and as a $batch part
// carries it (see Batched): one place for its path, conditions and preferences.
type rowRequest struct {
	method string
	row    domain.RowRef
	path   string
	body   domain.Attributes
	header http.Header
}

func createRowRequest(row domain.RowRef, attrs domain.Attributes) rowRequest {
	return writeRequest(row, attrs, http.Header{"If-None-Match": {"*"}})
}

func updateRowRequest(row domain.RowRef, attrs domain.Attributes, ifMatch string) rowRequest {
	return writeRequest(row, attrs, http.Header{"If-Match": {ifMatchValue(ifMatch)}})
}

// writeRequest PATCHes a row and asks for its representation with only the primary id selected,
// for the new version.
func writeRequest(row domain.RowRef, attrs domain.Attributes, hdr http.Header) rowRequest {
	hdr.Set("Prefer", "return=representation")
	return rowRequest{method: http.MethodPatch, row: row, path: selectedPath(row), body: attrs, header: hdr}
}

func deleteRowRequest(row domain.RowRef, ifMatch string) rowRequest {
	return rowRequest{method: http.MethodDelete, row: row, path: row.String(), header: http.Header{"If-Match": {ifMatchValue(ifMatch)}}}
}

func rowVersionRequest(row domain.RowRef) rowRequest {
	return rowRequest{method: http.MethodGet, row: row, path: selectedPath(row)}
}

func selectedPath(row domain.RowRef) string {
	if row.IDAttribute == "" {
		return row.String()
	}
	return row.String() + "?$select=" + url.QueryEscape(row.IDAttribute)
}

func (c *Client) exec(ctx context.Context, r rowRequest) (*response, error) {
	return c.do(ctx, r.method, r.row.EntitySet, r.path, r.body, r.header)
}

// writtenVersion is a write's result: the row's new version, or the error.
func writtenVersion(resp *response, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return versionOf(resp.Header, resp.body), nil
}

// foundVersion is RowVersion's result: a 404 is a row that does not exist, not an error.
func foundVersion(resp *response, err error) (string, bool, error) {
	var dv *domain.DataverseError
	if errors.As(err, &dv) && dv.Status == http.StatusNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return versionOf(resp.Header, resp.body), true, nil
}

// versionOf reads a row version from a response: the representation's @odata.etag, or the
// ETag header.
func versionOf(header http.Header, body []byte) string {
	var rep struct {
		ETag string `json:"@odata.etag"`
	}
	if json.Unmarshal(body, &rep) == nil && rep.ETag != "" {
		return rep.ETag
	}
	return header.Get("ETag")
}

func ifMatchValue(version string) string {
	if version == domain.AnyVersion {
		return "*"
	}
	return version
}

// UpsertByKey creates or updates the row identified by an alternate key, e.g.
// accounts(accountnumber='C10000').
func (c *Client) UpsertByKey(ctx context.Context, entitySet string, key map[string]string, attrs domain.Attributes) error {
	_, err := c.do(ctx, http.MethodPatch, entitySet, entitySet+"("+KeySegment(key)+")", attrs, nil)
	return err
}

// Row reads one row, limited to the given columns when any are named.
func (c *Client) Row(ctx context.Context, row domain.RowRef, columns ...string) (map[string]any, error) {
	path := row.String()
	if len(columns) > 0 {
		path += "?$select=" + url.QueryEscape(strings.Join(columns, ","))
	}
	resp, err := c.do(ctx, http.MethodGet, row.EntitySet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(resp.body, &out)
}

// Query lists rows of an entity set with OData query options ($select, $filter, $top, ...).
func (c *Client) Query(ctx context.Context, entitySet string, options url.Values) ([]map[string]any, error) {
	path := entitySet
	if len(options) > 0 {
		// OData wants $-options unescaped and spaces as %20, not the "+" url.Values would write.
		path += "?" + strings.ReplaceAll(options.Encode(), "+", "%20")
	}
	resp, err := c.do(ctx, http.MethodGet, entitySet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	var page struct {
		Value []map[string]any `json:"value"`
	}
	if err := json.Unmarshal(resp.body, &page); err != nil {
		return nil, fmt.Errorf("dataverse: query %s: %w", entitySet, err)
	}
	return page.Value, nil
}

// FindRowID returns the id of the first row matching filter.
func (c *Client) FindRowID(ctx context.Context, entitySet, idAttribute, filter string) (uuid.UUID, bool, error) {
	rows, err := c.Query(ctx, entitySet, url.Values{"$select": {idAttribute}, "$filter": {filter}, "$top": {"1"}})
	if err != nil || len(rows) == 0 {
		return uuid.Nil, false, err
	}
	s, _ := rows[0][idAttribute].(string)
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("dataverse: %s row has no %s id: %w", entitySet, idAttribute, err)
	}
	return id, true, nil
}

// KeySegment writes an alternate key as OData key predicates, sorted by name so the URL is stable.
func KeySegment(key map[string]string) string {
	names := make([]string, 0, len(key))
	for k := range key {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = k + "='" + strings.ReplaceAll(key[k], "'", "''") + "'"
	}
	return strings.Join(parts, ",")
}

type response struct {
	*http.Response
	body []byte
}

// maxResponse bounds what is read of any response body.
const maxResponse = 16 << 20

func (c *Client) do(ctx context.Context, method, entitySet, path string, body domain.Attributes, hdr http.Header) (*response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("dataverse: encode %s body: %w", path, err)
		}
	}
	if method != http.MethodGet {
		hdr = mergeHeaders(c.writeHeaders, hdr)
	}
	return c.send(ctx, method, entitySet, path, payload, "application/json", hdr)
}

// send makes one request: it waits for the throttle gate and a parallelism slot, authenticates,
// retries once with a fresh token after a 401, and turns an error answer into an *Error.
func (c *Client) send(ctx context.Context, method, entitySet, path string, payload []byte, contentType string, hdr http.Header) (*response, error) {
	requestText := requestText(method, path, payload)
	for attempt := 1; ; attempt++ {
		if err := c.gate.wait(ctx); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if err := c.limit.acquire(ctx); err != nil {
			return nil, fmt.Errorf("dataverse: %s %s: %w", method, path, err)
		}
		resp, data, err := c.roundTrip(ctx, method, entitySet, path, payload, contentType, hdr)
		c.limit.release()
		if err != nil {
			return nil, err
		}
		c.limit.hint(resp.Header.Get("x-ms-dop-hint"))
		// A $batch answers multipart even when a part failed; its parts carry the errors.
		if resp.StatusCode < 400 || strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/mixed") {
			return &response{Response: resp, body: data}, nil
		}
		dvErr := parseError(resp, data, requestText)
		if inv, ok := c.tokens.(interface{ Invalidate() }); ok && resp.StatusCode == http.StatusUnauthorized && attempt == 1 {
			inv.Invalidate() // the token may have been revoked or expired early: one retry with a new one
			continue
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			c.throttled(dvErr)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, dvErr)
	}
}

// requestText is a request as the call stack shows it: method, path and body, no credentials.
func requestText(method, path string, payload []byte) string {
	text := method + " " + APIPath + path
	if payload != nil {
		text += "\n" + truncate(string(payload), maxTextInStack)
	}
	return text
}

// throttled holds this user back after a 429 (of a whole request or of a $batch part): Dataverse's
// Retry-After is a wait for the user, not for the one request.
func (c *Client) throttled(dvErr *Error) {
	until := c.gate.block(max(dvErr.RetryAfter, time.Second))
	if c.onThrottle != nil {
		c.onThrottle(until)
	}
	if c.onThrottleCode != nil {
		c.onThrottleCode(dvErr.Code)
	}
}

func (c *Client) roundTrip(ctx context.Context, method, entitySet, path string, payload []byte, contentType string, hdr http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(payload))
	if err != nil {
		return nil, nil, fmt.Errorf("dataverse: %s %s: %w", method, path, err)
	}
	setRequestHeaders(req.Header, hdr)
	if payload != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.tokens != nil {
		tok, err := c.token(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, fmt.Errorf("dataverse: %s %s: %w", method, path, err)
			}
			return nil, nil, tokenError(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.record(method, entitySet, 0, start)
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("dataverse: %s %s: %w", method, path, ctx.Err())
		}
		return nil, nil, fmt.Errorf("%w: %s %s: %v", domain.ErrDataverseUnreachable, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	c.record(method, entitySet, resp.StatusCode, start)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s %s: reading response: %v", domain.ErrDataverseUnreachable, method, path, err)
	}
	return resp, data, nil
}

// setRequestHeaders writes the headers every request carries, a $batch part too, and then hdr's.
func setRequestHeaders(dst, hdr http.Header) {
	dst.Set("Accept", "application/json")
	dst.Set("OData-MaxVersion", "4.0")
	dst.Set("OData-Version", "4.0")
	// Dataverse sends the exception name and help link only when asked; the classifier wants them.
	dst.Set("Prefer", `odata.include-annotations="*"`)
	for k, v := range hdr {
		if k == "Prefer" { // one Prefer header with every preference, as OData clients send it
			v = []string{strings.Join(append(append([]string(nil), v...), dst.Get("Prefer")), ",")}
		}
		dst[k] = v
	}
}

// token asks the token source for a token, within ctx when the source can take one.
func (c *Client) token(ctx context.Context) (*oauth2.Token, error) {
	if ts, ok := c.tokens.(interface {
		TokenContext(context.Context) (*oauth2.Token, error)
	}); ok {
		return ts.TokenContext(ctx)
	}
	return c.tokens.Token()
}

func mergeHeaders(base, extra http.Header) http.Header {
	if len(base) == 0 {
		return extra
	}
	out := base.Clone()
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// HoldUntil holds back every request of this client until t, as a 429 does; another process of
// the same Dataverse user reports its 429s through it.
func (c *Client) HoldUntil(t time.Time) { c.gate.holdUntil(t) }

// HeldUntil is when the throttle gate opens (in the past when it is open).
func (c *Client) HeldUntil() time.Time {
	c.gate.mu.Lock()
	defer c.gate.mu.Unlock()
	return c.gate.until
}

// MaxParallel is the cap on requests in flight now (x-ms-dop-hint applied).
func (c *Client) MaxParallel() int { return c.limit.Limit() }

// InFlight is how many requests this client has in flight.
func (c *Client) InFlight() int { return c.limit.InUse() }

func (c *Client) record(method, entitySet string, status int, start time.Time) {
	if c.observe != nil {
		c.observe(method, entitySet, status, time.Since(start))
	}
}

// tokenError turns a failed token request into a Dataverse-style 401 so that it is classified as
// an authentication setup error. Entra ID's error text names the problem (AADSTS7000215: invalid
// client secret ...) and never contains the secret.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := http.StatusUnauthorized
		if re.Response != nil && re.Response.StatusCode >= 500 {
			status = re.Response.StatusCode // the token endpoint is down: transient
		}
		msg := re.ErrorDescription
		if msg == "" {
			msg = re.ErrorCode
		}
		return fmt.Errorf("token: %w", &Error{Status: status, Message: "Microsoft Entra ID refused the token request: " + msg})
	}
	return fmt.Errorf("%w: token request: %v", domain.ErrDataverseUnreachable, err)
}
