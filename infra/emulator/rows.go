package emulator

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/google/uuid"
)

// Every change of a row goes through put, so that the key indexes and the undo log of an open
// transaction never miss one. A stored row is never changed in place: a write stores a changed
// copy, which lets the undo log keep the replaced row itself as its before-image.

// keyIndex finds the rows holding given values of one alternate key or duplicate rule without a
// scan. A value maps to more than one row only when rows already break the key (rows kept across
// a definition reload, a ChangeRow) or, for a duplicate rule, when duplicates were written while
// detection was off, which is the Web API's default.
type keyIndex struct {
	attrs []string
	fold  bool // duplicate rules compare text without regard to case
	rows  map[string]map[uuid.UUID]struct{}
}

// entityKeys are the indexes of one entity, in the order of its definition: the first key or rule
// a write breaks is the one Dataverse names.
type entityKeys struct {
	ent      *Entity
	alt, dup []*keyIndex
	all      []*keyIndex        // alt, then dup
	eq       map[string]eqIndex // by rendered column, built as $filter queries need them (eqindex.go)
}

func newEntityKeys(ent *Entity, rows map[uuid.UUID]row) *entityKeys {
	k := &entityKeys{ent: ent, eq: map[string]eqIndex{}}
	for _, attrs := range ent.AlternateKeys {
		k.alt = append(k.alt, &keyIndex{attrs: attrs, rows: map[string]map[uuid.UUID]struct{}{}})
	}
	for _, attrs := range ent.DuplicateRules {
		k.dup = append(k.dup, &keyIndex{attrs: attrs, fold: true, rows: map[string]map[uuid.UUID]struct{}{}})
	}
	k.all = append(append(k.all, k.alt...), k.dup...)
	for id, r := range rows {
		k.add(id, r)
	}
	return k
}

func (k *entityKeys) add(id uuid.UUID, r row) {
	k.indexEq(id, r, true)
	for _, x := range k.all {
		if v, ok := x.valueOf(r); ok {
			ids := x.rows[v]
			if ids == nil {
				ids = map[uuid.UUID]struct{}{}
				x.rows[v] = ids
			}
			ids[id] = struct{}{}
		}
	}
}

func (k *entityKeys) remove(id uuid.UUID, r row) {
	k.indexEq(id, r, false)
	for _, x := range k.all {
		if v, ok := x.valueOf(r); ok {
			delete(x.rows[v], id)
			if len(x.rows[v]) == 0 {
				delete(x.rows, v)
			}
		}
	}
}

// valueOf is the index entry of a row's values. An alternate key indexes rows whose key columns
// all hold a value, in the text form a key in a URL is compared in (see find); a duplicate rule
// indexes rows whose rule columns all hold non-empty text, case-folded.
func (x *keyIndex) valueOf(r row) (string, bool) {
	parts := make([]string, len(x.attrs))
	for i, a := range x.attrs {
		v := r[a]
		if x.fold {
			s, ok := v.(string)
			if !ok || s == "" {
				return "", false
			}
			parts[i] = foldKey(s)
			continue
		}
		if v == nil {
			return "", false
		}
		if s, ok := v.(string); ok {
			// Alternate keys compare text as the database's collation does: without regard to case.
			parts[i] = foldKey(s)
			continue
		}
		parts[i] = fmt.Sprint(v)
	}
	return joinKey(parts), true
}

// joinKey joins values so that no two different lists give the same string.
func joinKey(parts []string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// foldKey maps every rune to the smallest rune of its case-folding orbit, so that two strings
// get the same key exactly when strings.EqualFold holds for them.
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// other reports whether a row other than self holds r's values of the key, as same compares them.
func (e *Emulator) other(x *keyIndex, entity string, r row, self uuid.UUID, same func([]string, row, row) bool) bool {
	v, ok := x.valueOf(r)
	if !ok {
		return false
	}
	for id := range x.rows[v] {
		if id != self && same(x.attrs, e.rows[entity][id], r) {
			return true
		}
	}
	return false
}

// findByKey returns a row holding the values of an alternate key, as text, or uuid.Nil.
func (e *Emulator) findByKey(ent *Entity, alt map[string]string) uuid.UUID {
	for _, x := range e.keys[ent.LogicalName].alt {
		if len(x.attrs) != len(alt) || !allIn(x.attrs, alt) {
			continue
		}
		parts := make([]string, len(x.attrs))
		for i, a := range x.attrs {
			parts[i] = alt[a]
			if t := ent.Attributes[a].Type; t == String || t == Memo {
				parts[i] = foldKey(alt[a]) // as valueOf keeps text
			}
		}
		for id := range x.rows[joinKey(parts)] {
			return id
		}
		return uuid.Nil
	}
	return uuid.Nil
}

// undoEntry is what a row was before a write of an open transaction: nil when it did not exist.
type undoEntry struct {
	entity string
	id     uuid.UUID
	before row
}

// put stores r as the row id of an entity, or deletes it when r is nil. The caller holds e.mu.
func (e *Emulator) put(entity string, id uuid.UUID, r row) {
	if e.txDepth > 0 {
		e.undo = append(e.undo, undoEntry{entity: entity, id: id, before: e.rows[entity][id]})
	}
	e.replace(entity, id, r)
}

func (e *Emulator) replace(entity string, id uuid.UUID, r row) {
	e.writes.Add(1)
	rows, keys := e.rows[entity], e.keys[entity]
	if old, ok := rows[id]; ok {
		keys.remove(id, old)
	}
	if r == nil {
		delete(rows, id)
		return
	}
	rows[id] = r
	keys.add(id, r)
}

// begin opens a transaction (a change set, a bulk action; they nest) and returns its mark for end.
func (e *Emulator) begin() int {
	e.txDepth++
	return len(e.undo)
}

// end closes the transaction begun at mark; unless it committed, every row it wrote is restored
// as it was, deletions and index entries included. The undo log is dropped when the outermost
// transaction ends.
func (e *Emulator) end(mark int, committed bool) {
	if !committed {
		for i := len(e.undo) - 1; i >= mark; i-- {
			u := e.undo[i]
			e.replace(u.entity, u.id, u.before)
		}
		e.undo = e.undo[:mark]
	}
	if e.txDepth--; e.txDepth == 0 {
		e.undo = nil
	}
}

// copyRow returns a row to change and store with put.
func copyRow(r row) row {
	c := make(row, len(r)+4)
	for k, v := range r {
		c[k] = v
	}
	return c
}
