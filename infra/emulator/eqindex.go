package emulator

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// A $filter of eq terms (a lookup by match fields, a currency by its ISO code) is answered from an
// index of the column rather than by rendering and testing every row: the initial load of a table
// that already holds rows asks one such query per batch of records, and a scan per query made
// the emulator, not dvsync, the bound of that load. The index only narrows the rows a filter is
// tested on; the filter still decides, so the answer is the scan's.

// eqIndex maps a column's values, in the form cmp.match compares text in (lower case), to the
// rows holding them. It is built at the first query that can use it and kept by every write.
type eqIndex map[string]map[uuid.UUID]struct{}

// eqKey is the index entry of a non-nil value: what cmp.match compares for text and ids.
func eqKey(v any) string { return strings.ToLower(fmt.Sprint(v)) }

// columnOf is the name a raw attribute has in a rendered row, which is what a $filter names.
func columnOf(ent *Entity, attribute string) string {
	if ent.Attributes[attribute].Type == Lookup {
		return "_" + attribute + "_value"
	}
	return attribute
}

func (x eqIndex) add(id uuid.UUID, v any) {
	if v == nil {
		return
	}
	k := eqKey(v)
	ids := x[k]
	if ids == nil {
		ids = map[uuid.UUID]struct{}{}
		x[k] = ids
	}
	ids[id] = struct{}{}
}

func (x eqIndex) remove(id uuid.UUID, v any) {
	if v == nil {
		return
	}
	k := eqKey(v)
	delete(x[k], id)
	if len(x[k]) == 0 {
		delete(x, k)
	}
}

// indexEq keeps a written row's columns in the entity's equality indexes.
func (k *entityKeys) indexEq(id uuid.UUID, r row, add bool) {
	for attribute, v := range r {
		x := k.eq[columnOf(k.ent, attribute)]
		if x == nil {
			continue
		}
		if add {
			x.add(id, v)
		} else {
			x.remove(id, v)
		}
	}
}

// eqIndexOf is the index of a column, built from rows at its first use.
func (k *entityKeys) eqIndexOf(column string, rows map[uuid.UUID]row) eqIndex {
	if x := k.eq[column]; x != nil {
		return x
	}
	x := eqIndex{}
	for id, r := range rows {
		for attribute, v := range r {
			if columnOf(k.ent, attribute) == column {
				x.add(id, v)
			}
		}
	}
	k.eq[column] = x
	return x
}

// candidates returns a set of rows that holds every row f keeps, from the indexes, and false when
// f cannot be narrowed that way (a range, a function, a not, a number or a null): then every row
// is a candidate.
func (k *entityKeys) candidates(f filter, rows map[uuid.UUID]row) (map[uuid.UUID]struct{}, bool) {
	switch c := f.(type) {
	case cmp:
		switch c.value.(type) {
		case string: // text, or an id (literal lowers guids)
		default:
			return nil, false // numbers compare as numbers, booleans and null are not worth it
		}
		if c.op != "eq" {
			return nil, false
		}
		return k.eqIndexOf(c.prop, rows)[eqKey(c.value)], true
	case logical:
		left, lok := k.candidates(c.left, rows)
		if c.op == "and" {
			right, rok := k.candidates(c.right, rows)
			switch {
			case lok && (!rok || len(left) <= len(right)):
				return left, true
			case rok:
				return right, true
			}
			return nil, false
		}
		if !lok {
			return nil, false
		}
		right, rok := k.candidates(c.right, rows)
		if !rok {
			return nil, false
		}
		union := make(map[uuid.UUID]struct{}, len(left)+len(right))
		for id := range left {
			union[id] = struct{}{}
		}
		for id := range right {
			union[id] = struct{}{}
		}
		return union, true
	}
	return nil, false
}
