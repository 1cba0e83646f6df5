// Conformance checks of the Dataverse emulator, made with dynamics-web-api, a Dataverse Web API
// client nobody here wrote. Each check prints one JSON line {name, ok, error}; the Go test
// infra/emulator/conformance_test.go runs this script against a fresh emulator.
//
// Environment: DATAVERSE_URL, TOKEN_URL, CLIENT_ID, CLIENT_SECRET, ADMIN_URL.
import assert from "node:assert/strict";
import { DynamicsWebApi } from "dynamics-web-api";

const env = process.env;
const form = new URLSearchParams({
  grant_type: "client_credentials", client_id: env.CLIENT_ID, client_secret: env.CLIENT_SECRET,
  scope: env.DATAVERSE_URL + "/.default",
});
const tokenResponse = await fetch(env.TOKEN_URL, { method: "POST", body: form });
const { access_token: token } = await tokenResponse.json();
const api = new DynamicsWebApi({ serverUrl: env.DATAVERSE_URL, onTokenRefresh: async () => token, dataApi: { version: "9.2" } });
const admin = (path, body) => fetch(env.ADMIN_URL + path, { method: "POST", body: JSON.stringify(body) });

// expectError runs fn and returns the error dynamics-web-api raised.
async function expectError(fn) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded; an error was expected");
}

const checks = {
  "create returns the id, or the row with return=representation": async () => {
    const id = await api.create({ collection: "accounts", data: { name: "Fourth Coffee" } });
    assert.match(id, /^[0-9a-f-]{36}$/);
    const row = await api.create({ collection: "accounts", data: { name: "Litware" }, returnRepresentation: true });
    assert.equal(row.name, "Litware");
    assert.match(row.accountid, /^[0-9a-f-]{36}$/);
    assert.match(row["@odata.etag"], /^W\/"\d+"$/);
  },
  "retrieve with $select": async () => {
    const id = await api.create({ collection: "accounts", data: { name: "Adventure Works", telephone1: "555-0100" } });
    const row = await api.retrieve({ collection: "accounts", key: id, select: ["name"] });
    assert.equal(row.name, "Adventure Works");
    assert.equal(row.telephone1, undefined);
  },
  "retrieveMultiple with filter, orderby, count and paging": async () => {
    for (const n of ["P1", "P2", "P3", "P4", "P5"]) {
      await api.create({ collection: "accounts", data: { name: "Paged " + n, address1_city: "Paging" } });
    }
    const first = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "address1_city eq 'Paging'",
      orderBy: ["name desc"], maxPageSize: 2, count: true });
    assert.equal(first.value.length, 2);
    assert.equal(first.value[0].name, "Paged P5");
    assert.equal(first.oDataCount ?? first["@odata.count"], 5);
    assert.ok(first.oDataNextLink ?? first["@odata.nextLink"], "no @odata.nextLink on a full page");
    const all = await api.retrieveAll({ collection: "accounts", select: ["name"], filter: "startswith(name,'Paged') and address1_city eq 'Paging'", maxPageSize: 2 });
    assert.equal(all.value.length, 5);
  },
  "update, and 404 with 0x80040217 for a missing row": async () => {
    const id = await api.create({ collection: "accounts", data: { name: "Before" } });
    await api.update({ collection: "accounts", key: id, data: { name: "After" } });
    assert.equal((await api.retrieve({ collection: "accounts", key: id, select: ["name"] })).name, "After");
    await api.deleteRecord({ collection: "accounts", key: id });
    const err = await expectError(() => api.retrieve({ collection: "accounts", key: id }));
    assert.equal(err.status, 404);
    assert.equal(err.code, "0x80040217");
    assert.match(err.message, /Does Not Exist/);
  },
  "upsert by alternate key creates, then updates the same row": async () => {
    await api.upsert({ collection: "accounts", key: "accountnumber='ALT-1'", data: { name: "Alt one" } });
    await api.upsert({ collection: "accounts", key: "accountnumber='ALT-1'", data: { name: "Alt one, renamed" } });
    const rows = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "accountnumber eq 'ALT-1'" });
    assert.equal(rows.value.length, 1);
    assert.equal(rows.value[0].name, "Alt one, renamed");
  },
  "@odata.bind sets a lookup; a missing target is 404": async () => {
    const cur = await api.create({ collection: "transactioncurrencies", data: { isocurrencycode: "EUR", currencyname: "Euro" } });
    const id = await api.create({ collection: "accounts", data: { name: "Bound", "transactioncurrencyid@odata.bind": `/transactioncurrencies(${cur})` } });
    const row = await api.retrieve({ collection: "accounts", key: id, select: ["_transactioncurrencyid_value"] });
    assert.equal(row._transactioncurrencyid_value, cur);
    const err = await expectError(() => api.create({ collection: "accounts", data: { "transactioncurrencyid@odata.bind": "/transactioncurrencies(00000000-0000-0000-0000-00000000dead)" } }));
    assert.equal(err.status, 404);
    assert.equal(err.code, "0x80040217");
  },
  "$batch with a change set commits together": async () => {
    api.startBatch();
    api.create({ collection: "accounts", data: { name: "Batch A", address1_city: "Batchville" } });
    api.create({ collection: "accounts", data: { name: "Batch B", address1_city: "Batchville" } });
    const results = await api.executeBatch();
    assert.equal(results.length, 2);
    const rows = await api.retrieveMultiple({ collection: "accounts", filter: "address1_city eq 'Batchville'" });
    assert.equal(rows.value.length, 2);
  },
  "$batch change set rolls back as a whole": async () => {
    api.startBatch();
    api.create({ collection: "accounts", data: { name: "Rollback A", address1_city: "Rollback" } });
    api.create({ collection: "accounts", data: { name: "x".repeat(161), address1_city: "Rollback" } });
    const err = await expectError(() => api.executeBatch());
    // dynamics-web-api reports a failed batch part as {status, error: {code, message}}.
    const first = Array.isArray(err) ? err[0] : err;
    assert.equal(first.status, 400);
    assert.equal(first.error?.code ?? first.code, "0x80044331");
    assert.match(first.error?.message ?? first.message, /exceeded the maximum allowed length of '160'/);
    const rows = await api.retrieveMultiple({ collection: "accounts", filter: "address1_city eq 'Rollback'" });
    assert.equal(rows.value.length, 0, "the first create of a failed change set was kept");
  },
  "unknown property: 400 with code 0x0 and OData's message": async () => {
    const err = await expectError(() => api.create({ collection: "accounts", data: { nosuchcolumn: 1 } }));
    assert.equal(err.status, 400);
    assert.equal(err.code, "0x0");
    assert.equal(err.message, "Could not find a property named 'nosuchcolumn' on type 'Microsoft.Dynamics.CRM.account'.");
  },
  "a base currency exists; a second currency with its ISO code fails with 0x80048cf3": async () => {
    const rows = await api.retrieveMultiple({ collection: "transactioncurrencies", select: ["isocurrencycode", "exchangerate"], filter: "isocurrencycode eq 'USD'" });
    assert.equal(rows.value.length, 1);
    assert.equal(rows.value[0].exchangerate, 1);
    const err = await expectError(() => api.create({ collection: "transactioncurrencies", data: { isocurrencycode: "USD", currencyname: "Dollar" } }));
    assert.equal(err.status, 400);
    assert.equal(err.code, "0x80048cf3");
  },
  "WhoAmI names the user, its business unit and organization": async () => {
    const who = await api.callFunction({ name: "WhoAmI" });
    for (const k of ["UserId", "BusinessUnitId", "OrganizationId"]) assert.match(who[k], /^[0-9a-f-]{36}$/, k);
  },
  "RetrieveUserPrivileges and RetrievePrincipalAccess on the user": async () => {
    const who = await api.callFunction({ name: "WhoAmI" });
    const privs = await api.callFunction({ collection: "systemusers", key: who.UserId, name: "Microsoft.Dynamics.CRM.RetrieveUserPrivileges" });
    const create = privs.RolePrivileges.find((p) => p.PrivilegeName === "prvCreateAccount");
    assert.ok(create, "no prvCreateAccount among the RolePrivileges");
    assert.equal(create.Depth, "Global");
    assert.equal(create.BusinessUnitId, who.BusinessUnitId);
    assert.match(create.PrivilegeId, /^[0-9a-f-]{36}$/);
    const id = await api.create({ collection: "accounts", data: { name: "Access target" } });
    const access = await api.callFunction({ collection: "systemusers", key: who.UserId, name: "Microsoft.Dynamics.CRM.RetrievePrincipalAccess",
      parameters: { Target: { "@odata.id": `accounts(${id})` } } });
    assert.match(access.AccessRights, /ReadAccess, WriteAccess/);
  },
  "EntityDefinitions with Attributes: types, lengths, lookup targets": async () => {
    const ent = await api.retrieveEntity({ key: "LogicalName='account'", expand: [{ property: "Attributes" }] });
    assert.equal(ent.EntitySetName, "accounts");
    const name = ent.Attributes.find((a) => a.LogicalName === "name");
    assert.equal(name.AttributeType, "String");
    assert.equal(name.MaxLength, 160);
    const attrs = await api.retrieveAttributes({ entityKey: "LogicalName='account'" });
    const cur = attrs.value.find((a) => a.LogicalName === "transactioncurrencyid");
    assert.deepEqual(cur.Targets, ["transactioncurrency"]);
  },
  "missing privilege: 403 with 0x80040220 in Dataverse's message form": async () => {
    await admin("/_emulator/privileges", { revoke: ["prvCreateProduct"] });
    try {
      const err = await expectError(() => api.create({ collection: "products", data: { name: "Bicycle" } }));
      assert.equal(err.status, 403);
      assert.equal(err.code, "0x80040220");
      assert.match(err.message, /^Principal user \(Id=[0-9a-f-]{36}, type=8, .*\), is missing prvCreateProduct privilege \(Id=[0-9a-f-]{36}\) on OTC=1024 for entity 'product'/);
    } finally {
      await admin("/_emulator/privileges", { grant: ["prvCreateProduct"] });
    }
  },
};

let failed = 0;
for (const [name, check] of Object.entries(checks)) {
  try {
    await check();
    console.log(JSON.stringify({ name, ok: true }));
  } catch (e) {
    failed++;
    console.log(JSON.stringify({ name, ok: false, error: String(e?.stack ?? e) }));
  }
}
process.exit(failed ? 1 : 0);
