package dataverse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// FindRows returns the rows of q.EntitySet whose attributes equal q.Values: one GET with a
// $filter of eq terms joined by and, $select of the id, the primary name and the match
// attributes, and $top.
func (c *Client) FindRows(ctx context.Context, q domain.MatchQuery) ([]domain.FoundRow, error) {
	req, err := findRowsRequest(q)
	if err != nil {
		return nil, err
	}
	return foundRows(q, req)(c.exec(ctx, req))
}

// FindRows is Client.FindRows with the lookups of the same shape made at the same time merged
// into one GET (lookup.go), which travels as a part of a $batch with the other calls on the
// entity set. Each caller gets the rows its own query would have found.
func (b *Batched) FindRows(ctx context.Context, q domain.MatchQuery) ([]domain.FoundRow, error) {
	if mergeable(q) {
		bt, err := b.lookupBatcher(lookupShape(q))
		if err != nil {
			return nil, err
		}
		rows, err := bt.Do(ctx, lookupCall{ctx: ctx, q: q})
		if !errors.Is(err, errOwnQuery) {
			return rows, err
		}
	}
	req, err := findRowsRequest(q)
	if err != nil {
		return nil, err
	}
	return foundRows(q, req)(b.do(ctx, req))
}

func findRowsRequest(q domain.MatchQuery) (rowRequest, error) {
	if len(q.Values) == 0 {
		return rowRequest{}, fmt.Errorf("dataverse: find %s rows: no values to match", q.EntitySet)
	}
	sel := []string{q.IDAttribute}
	if q.NameAttribute != "" {
		sel = append(sel, q.NameAttribute)
	}
	terms := make([]string, len(q.Values))
	for i, v := range q.Values {
		lit, err := Literal(v.Value)
		if err != nil {
			return rowRequest{}, fmt.Errorf("dataverse: find %s rows by %s: %w", q.EntitySet, v.Attribute, err)
		}
		terms[i] = v.Attribute + " eq " + lit
		if v.Attribute != q.NameAttribute && v.Attribute != q.IDAttribute {
			sel = append(sel, v.Attribute)
		}
	}
	opts := url.Values{"$select": {strings.Join(sel, ",")}, "$filter": {strings.Join(terms, " and ")}}
	if q.Top > 0 {
		opts.Set("$top", strconv.Itoa(q.Top))
	}
	// OData wants $-options unescaped and spaces as %20, not the "+" url.Values would write.
	path := q.EntitySet + "?" + strings.ReplaceAll(opts.Encode(), "+", "%20")
	return rowRequest{method: http.MethodGet, row: domain.RowRef{EntitySet: q.EntitySet}, path: path}, nil
}

// Literal writes a value as an OData literal: text quoted with ' doubled, numbers and booleans
// as they are.
func Literal(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'", nil
	case json.Number:
		return x.String(), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case uuid.UUID:
		return x.String(), nil
	}
	return "", fmt.Errorf("cannot match on a value of type %T", v)
}

// foundRows reads a FindRows answer.
func foundRows(q domain.MatchQuery, req rowRequest) func(*response, error) ([]domain.FoundRow, error) {
	return func(resp *response, err error) ([]domain.FoundRow, error) {
		if err != nil {
			return nil, err
		}
		var page struct {
			Value []map[string]any `json:"value"`
		}
		dec := json.NewDecoder(strings.NewReader(string(resp.body)))
		dec.UseNumber()
		if err := dec.Decode(&page); err != nil {
			return nil, fmt.Errorf("dataverse: %s %s: %w", req.method, req.path, err)
		}
		out := make([]domain.FoundRow, 0, len(page.Value))
		for _, r := range page.Value {
			s, _ := r[q.IDAttribute].(string)
			id, err := uuid.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("dataverse: %s row has no %s id: %w", q.EntitySet, q.IDAttribute, err)
			}
			row := domain.FoundRow{ID: id, Values: map[string]any{}}
			row.Name, _ = r[q.NameAttribute].(string)
			row.Version, _ = r["@odata.etag"].(string)
			for _, v := range q.Values {
				row.Values[v.Attribute] = r[v.Attribute]
			}
			out = append(out, row)
		}
		return out, nil
	}
}
