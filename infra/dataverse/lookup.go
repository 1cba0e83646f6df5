package dataverse

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/microbatch"
)

// The match lookups of many records (an initial load against an environment that already holds
// rows asks one per record) are merged: the lookups of one shape made at the same moment become
// one GET whose $filter is the or of each record's terms, and its rows are handed back to the
// records they equal. Each record then gets the rows its own query would have found; where that
// cannot be told from the merged answer, its own query is sent after all.
const (
	maxLookupsPerQuery = 50       // records per merged GET
	maxMergedFilterLen = 16 << 10 // bytes of $filter per merged GET, far below Dataverse's URL limits
	maxLookupsInFlight = 16       // merged GETs of one shape at once; while all are out, lookups gather
)

// lookupShape is what lookups must share to be merged: the entity set, the attributes matched and
// returned.
func lookupShape(q domain.MatchQuery) string {
	var b strings.Builder
	b.WriteString(q.EntitySet + "\x00" + q.IDAttribute + "\x00" + q.NameAttribute)
	for _, v := range q.Values {
		b.WriteString("\x00" + v.Attribute)
	}
	return b.String()
}

// mergeable reports whether q can share a GET: text values only (numbers would compare as
// Dataverse reads them, which this side does not know) and a bounded $top.
func mergeable(q domain.MatchQuery) bool {
	if q.Top <= 0 || len(q.Values) == 0 {
		return false
	}
	for _, v := range q.Values {
		if _, ok := v.Value.(string); !ok {
			return false
		}
	}
	return true
}

// equalityFold is text as Dataverse's eq compares it, so far as it can be told here: the
// database's collation does not regard case, accents or width (Latin1_General_CI_AI is the
// default) nor trailing spaces. It must hold every two values Dataverse finds equal together;
// that it may join a few Dataverse keeps apart is handled by mergeLookups.
func equalityFold(s string) string {
	t := transform.Chain(norm.NFKD, runes.Remove(runes.In(unicode.Mn)), cases.Fold())
	out, _, err := transform.String(t, s)
	if err != nil {
		out = strings.ToLower(s)
	}
	return strings.TrimRight(out, " ")
}

// lookupKey is a record's values folded, one key per record that asks the same rows.
func lookupKey(values []domain.MatchValue) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = equalityFold(v.Value.(string))
	}
	return strings.Join(parts, "\x00")
}

// rowKey is a found row's values in the form of lookupKey.
func rowKey(values []domain.MatchValue, row domain.FoundRow) (string, bool) {
	parts := make([]string, len(values))
	for i, v := range values {
		s, ok := row.Values[v.Attribute].(string)
		if !ok {
			return "", false
		}
		parts[i] = equalityFold(s)
	}
	return strings.Join(parts, "\x00"), true
}

// exactKey tells two records' values apart exactly.
func exactKey(values []domain.MatchValue) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = v.Value.(string)
	}
	return strings.Join(parts, "\x00")
}

// lookupBatcher is the batcher of a lookup shape, started at its first lookup.
func (b *Batched) lookupBatcher(shape string) (*microbatch.Batcher[domain.MatchQuery, []domain.FoundRow], error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lookupsClosed {
		return nil, microbatch.ErrClosed
	}
	if bt := b.lookups[shape]; bt != nil {
		return bt, nil
	}
	bt := microbatch.New(microbatch.Config{MaxSize: maxLookupsPerQuery, Linger: b.cfg.Linger, MaxInFlight: maxLookupsInFlight},
		b.mergeLookups)
	b.lookups[shape] = bt
	return bt, nil
}

// mergeLookups answers lookups of one shape with as few GETs as it can. Records are grouped so
// that no two in a group have values that fold alike but differ (where the collation might keep
// them apart, each must see only its own rows); each group's GET goes out at the same moment as
// the others', so that they travel in one $batch. A record falls back to its own query when the
// merged answer cannot say what that would have been: the GET failed (its own error is the one
// to report), the answer was cut by $top and the record has fewer rows than it asked for, or
// the answer holds a row no record's values account for.
func (b *Batched) mergeLookups(ctx context.Context, qs []domain.MatchQuery) ([][]domain.FoundRow, []error) {
	outs, errs := make([][]domain.FoundRow, len(qs)), make([]error, len(qs))
	var groups [][]int
	for i, q := range qs {
		key, exact := lookupKey(q.Values), exactKey(q.Values)
		placed := false
		for g, members := range groups {
			if len(members) >= maxLookupsPerQuery {
				continue
			}
			clash := false
			for _, j := range members {
				if lookupKey(qs[j].Values) == key && exactKey(qs[j].Values) != exact {
					clash = true
					break
				}
			}
			if !clash {
				groups[g], placed = append(members, i), true
				break
			}
		}
		if !placed {
			groups = append(groups, []int{i})
		}
	}
	var wg sync.WaitGroup
	for _, members := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.answerGroup(ctx, qs, members, outs, errs)
		}()
	}
	wg.Wait()
	return outs, errs
}

// answerGroup sends one group's GET (or GETs, when its filter would be too long) and hands out
// the rows; each member's result is written to outs and errs at its index.
func (b *Batched) answerGroup(ctx context.Context, qs []domain.MatchQuery, members []int, outs [][]domain.FoundRow, errs []error) {
	own := func(i int) {
		req, err := findRowsRequest(qs[i])
		if err != nil {
			errs[i] = err
			return
		}
		outs[i], errs[i] = foundRows(qs[i], req)(b.do(ctx, req))
	}
	if len(members) == 1 { // alone it is the record's own query
		own(members[0])
		return
	}
	req, top, err := mergedRequest(qs, members)
	if err != nil {
		// Too long for one GET, or a value it cannot write: halves, down to the records' own queries.
		half := len(members) / 2
		var wg sync.WaitGroup
		for _, part := range [][]int{members[:half], members[half:]} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.answerGroup(ctx, qs, part, outs, errs)
			}()
		}
		wg.Wait()
		return
	}
	shape := qs[members[0]] // the shape's attributes, for reading the rows
	rows, err := foundRows(shape, req)(b.do(ctx, req))
	var retry []int
	if err != nil {
		retry = members
	} else {
		byKey := map[string][]int{}
		for _, i := range members {
			k := lookupKey(qs[i].Values)
			byKey[k] = append(byKey[k], i)
		}
		for _, row := range rows {
			k, ok := rowKey(shape.Values, row)
			if !ok || byKey[k] == nil {
				// Dataverse found it equal to a record's values where the fold does not: only the
				// records' own queries can say whose it is.
				retry = members
				break
			}
			for _, i := range byKey[k] {
				if len(outs[i]) < qs[i].Top {
					outs[i] = append(outs[i], row)
				}
			}
		}
		if retry == nil && len(rows) >= top {
			for _, i := range members {
				if len(outs[i]) < qs[i].Top {
					retry = append(retry, i) // the cut may have taken rows of its
				}
			}
		}
	}
	var wg sync.WaitGroup
	for _, i := range retry {
		outs[i] = nil
		wg.Add(1)
		go func() {
			defer wg.Done()
			own(i)
		}()
	}
	wg.Wait()
	for _, i := range members {
		if errs[i] == nil && outs[i] == nil {
			outs[i] = []domain.FoundRow{}
		}
	}
}

// mergedRequest is the GET of a group's lookups: the or of each record's terms, $top the sum of
// theirs and one more, so that an answer of fewer rows than top is known to be whole.
func mergedRequest(qs []domain.MatchQuery, members []int) (rowRequest, int, error) {
	first := qs[members[0]]
	sel := []string{first.IDAttribute}
	if first.NameAttribute != "" {
		sel = append(sel, first.NameAttribute)
	}
	for _, v := range first.Values {
		if v.Attribute != first.NameAttribute && v.Attribute != first.IDAttribute {
			sel = append(sel, v.Attribute)
		}
	}
	seen := map[string]bool{}
	var alternatives []string
	top := 1
	for _, i := range members {
		top += qs[i].Top
		if exact := exactKey(qs[i].Values); seen[exact] {
			continue
		} else {
			seen[exact] = true
		}
		terms := make([]string, len(qs[i].Values))
		for k, v := range qs[i].Values {
			lit, err := Literal(v.Value)
			if err != nil {
				return rowRequest{}, 0, fmt.Errorf("dataverse: find %s rows by %s: %w", first.EntitySet, v.Attribute, err)
			}
			terms[k] = v.Attribute + " eq " + lit
		}
		alternatives = append(alternatives, "("+strings.Join(terms, " and ")+")")
	}
	filter := strings.Join(alternatives, " or ")
	if len(filter) > maxMergedFilterLen {
		return rowRequest{}, 0, fmt.Errorf("dataverse: a merged lookup of %d records is %d bytes long", len(members), len(filter))
	}
	opts := url.Values{"$select": {strings.Join(sel, ",")}, "$filter": {filter}, "$top": {strconv.Itoa(top)}}
	path := first.EntitySet + "?" + strings.ReplaceAll(opts.Encode(), "+", "%20")
	return rowRequest{method: http.MethodGet, row: domain.RowRef{EntitySet: first.EntitySet}, path: path}, top, nil
}
