package main

import (
	"testing"
)

// With DVSYNC_LOCAL_CURRENCY set and no currency record of it ever published (Business Central
// keeps LCY in its setup, not among its currencies), a customer with a blank currency code gets
// Dataverse's currency of that ISO code, as Business Central binds its LCY, instead of waiting for
// a currency record that never comes.
func TestABlankCurrencyCodeBindsDataversesLocalCurrency(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.LocalCurrency = "USD" }})
	base, code := h.emu.BaseCurrency()
	if code != "USD" {
		t.Fatalf("the emulator's base currency is %q, want USD", code)
	}
	k := h.key("C20000")
	h.publish("customer", k, 1, map[string]any{"number": k, "displayName": "In LCY", "currencyCode": ""})
	c := h.waitCoupled("customer", k, 1)
	if row := h.row("accounts", c.RowID); row["_transactioncurrencyid_value"] != base.String() {
		t.Fatalf("the account's currency: %v, want the base currency %s", row["_transactioncurrencyid_value"], base)
	}
}
