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
// raw sends a request without the client, for what dynamics-web-api does not show: headers, text bodies.
const raw = (path, headers = {}, bearer = token) => fetch(env.DATAVERSE_URL + "/api/data/v9.2/" + path, {
  headers: { Accept: "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0", ...(bearer ? { Authorization: "Bearer " + bearer } : {}), ...headers },
});
const getToken = async () => (await (await fetch(env.TOKEN_URL, { method: "POST", body: form })).json()).access_token;
const FV = "@OData.Community.Display.V1.FormattedValue";

// seedAccounts creates accounts in a city of their own, in order, and returns their ids.
async function seedAccounts(city, n) {
  const ids = [];
  for (let i = 1; i <= n; i++) ids.push(await api.create({ collection: "accounts", data: { name: `${city} ${i}`, address1_city: city } }));
  return ids;
}

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
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results
  "paging: @odata.nextLink carries a paging cookie with the last row's id; rows come by primary key": async () => {
    const ids = await seedAccounts("Cookie", 5);
    const sorted = [...ids].sort();
    const first = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "address1_city eq 'Cookie'", maxPageSize: 2 });
    assert.deepEqual(first.value.map((r) => r.accountid), sorted.slice(0, 2));
    const token = new URL(first.oDataNextLink).searchParams.get("$skiptoken");
    const last = sorted[1].toUpperCase(), firstId = sorted[0].toUpperCase();
    assert.equal(token, `<cookie pagenumber="2" pagingcookie="%3ccookie%20page%3d%221%22%3e%3caccountid%20last%3d%22%7b${last}%7d%22%20first%3d%22%7b${firstId}%7d%22%20%2f%3e%3c%2fcookie%3e" istracking="False" />`);
  },
  "paging: the next page starts after the last row, even when a row of the first page was deleted": async () => {
    const ids = await seedAccounts("Deleted", 5);
    const sorted = [...ids].sort();
    const first = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "address1_city eq 'Deleted'", maxPageSize: 2 });
    await api.deleteRecord({ collection: "accounts", key: sorted[0] });
    const second = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "address1_city eq 'Deleted'", maxPageSize: 2 }, first.oDataNextLink);
    assert.deepEqual(second.value.map((r) => r.accountid), sorted.slice(2, 4));
  },
  "paging: following nextLink without Prefer: odata.maxpagesize returns the rows after the cookie": async () => {
    const ids = await seedAccounts("NoPrefer", 5);
    const sorted = [...ids].sort();
    const first = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "address1_city eq 'NoPrefer'", maxPageSize: 2 });
    const rest = await api.retrieveMultiple({ collection: "accounts" }, first.oDataNextLink);
    assert.deepEqual(rest.value.map((r) => r.accountid), sorted.slice(2));
    assert.equal(rest.oDataNextLink, undefined);
  },
  "paging with $orderby: every row once, in order": async () => {
    await seedAccounts("Ordered", 5);
    const all = await api.retrieveAll({ collection: "accounts", select: ["name"], filter: "address1_city eq 'Ordered'", orderBy: ["name desc"], maxPageSize: 2 });
    assert.deepEqual(all.value.map((r) => r.name), ["Ordered 5", "Ordered 4", "Ordered 3", "Ordered 2", "Ordered 1"]);
  },
  "paging: Preference-Applied names the page size and the annotations": async () => {
    await seedAccounts("Applied", 3);
    const resp = await raw("accounts?$select=name&$filter=address1_city%20eq%20'Applied'", { Prefer: 'odata.maxpagesize=2,odata.include-annotations="*"' });
    assert.equal(resp.status, 200);
    assert.equal(resp.headers.get("preference-applied"), 'odata.maxpagesize=2,odata.include-annotations="*"');
    assert.equal((await resp.json()).value.length, 2);
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
  "$select, $filter, $orderby and $expand of an unknown property: 400 0x0 Could not find a property": async () => {
    const want = (name) => `Could not find a property named '${name}' on type 'Microsoft.Dynamics.CRM.account'.`;
    const calls = {
      nosuchselect: () => api.retrieveMultiple({ collection: "accounts", select: ["name", "nosuchselect"] }),
      nosuchfilter: () => api.retrieveMultiple({ collection: "accounts", filter: "nosuchfilter eq 'x'" }),
      nosuchorder: () => api.retrieveMultiple({ collection: "accounts", orderBy: ["nosuchorder desc"] }),
      nosuchnav: () => api.retrieveMultiple({ collection: "accounts", expand: [{ property: "nosuchnav" }] }),
    };
    for (const [name, call] of Object.entries(calls)) {
      const err = await expectError(call);
      assert.equal(err.status, 400, name);
      assert.equal(err.code, "0x0", name);
      assert.equal(err.message, want(name));
    }
    const id = await api.create({ collection: "accounts", data: { name: "Select one" } });
    const err = await expectError(() => api.retrieve({ collection: "accounts", key: id, select: ["nosuchcolumn"] }));
    assert.equal(err.status, 400);
    assert.equal(err.message, want("nosuchcolumn"));
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/join-tables
  "$expand of a lookup returns the related row with its own $select": async () => {
    const contact = await api.create({ collection: "contacts", data: { firstname: "Yvonne", lastname: "McKay", jobtitle: "Coffee Master" } });
    const id = await api.create({ collection: "accounts", data: { name: "Expanded", "primarycontactid@odata.bind": `/contacts(${contact})` } });
    const row = await api.retrieve({ collection: "accounts", key: id, select: ["name"], expand: [{ property: "primarycontactid", select: ["fullname"] }] });
    assert.equal(row.name, "Expanded");
    assert.equal(row.primarycontactid.contactid, contact);
    assert.equal(row.primarycontactid.fullname, "Yvonne McKay");
    assert.equal(row.primarycontactid.jobtitle, undefined);
    assert.match(row.primarycontactid["@odata.etag"], /^W\/"\d+"$/);
    const none = await api.retrieve({ collection: "accounts", key: await api.create({ collection: "accounts", data: { name: "No contact" } }), select: ["name"], expand: [{ property: "primarycontactid" }] });
    assert.equal(none.primarycontactid, null);
    const list = await api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "name eq 'Expanded'", expand: [{ property: "primarycontactid", select: ["jobtitle"] }] });
    assert.equal(list.value[0].primarycontactid.jobtitle, "Coffee Master");
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns#formatted-values
  'annotations="*": formatted values of option sets, money, dates and lookups; lookup target and navigation property': async () => {
    const id = await api.create({ collection: "accounts", data: { name: "Annotated", customertypecode: 3, creditlimit: 31000, statecode: 0 } });
    const row = await api.retrieve({ collection: "accounts", key: id, select: ["name", "customertypecode", "creditlimit", "createdon", "statecode"], includeAnnotations: "*" });
    assert.equal(row["customertypecode" + FV], "Customer");
    assert.equal(row["statecode" + FV], "Active");
    assert.equal(row["creditlimit" + FV], "$31,000.00");
    assert.match(row["createdon" + FV], /^\d{1,2}\/\d{1,2}\/\d{4} \d{1,2}:\d{2} (AM|PM)$/);
    // A money column brings the row's currency with it, and the lookup its annotations.
    assert.match(row._transactioncurrencyid_value ?? "", /^[0-9a-f-]{36}$/, "selecting a money column did not bring _transactioncurrencyid_value");
    assert.equal(row["_transactioncurrencyid_value" + FV], "US Dollar");
    assert.equal(row["_transactioncurrencyid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], "transactioncurrency");
    assert.equal(row["_transactioncurrencyid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"], "transactioncurrencyid");
    assert.equal(row.customertypecode_Formatted, "Customer", "dynamics-web-api did not read the annotation");
    assert.equal(row._transactioncurrencyid_value_LogicalName, "transactioncurrency");
  },
  "annotations: only those asked for, none without the preference; polymorphic lookups name their navigation property": async () => {
    const parent = await api.create({ collection: "accounts", data: { name: "Parent Co" } });
    const id = await api.create({ collection: "contacts", data: { firstname: "Nancy", lastname: "Anderson", "parentcustomerid_account@odata.bind": `/accounts(${parent})` } });
    const some = await api.retrieve({ collection: "contacts", key: id, select: ["fullname", "_parentcustomerid_value", "createdon"], includeAnnotations: "OData.Community.Display.V1.FormattedValue" });
    assert.equal(some["_parentcustomerid_value" + FV], "Parent Co");
    assert.equal(some["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], undefined);
    const all = await api.retrieve({ collection: "contacts", key: id, select: ["_parentcustomerid_value"], includeAnnotations: "*" });
    assert.equal(all["_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"], "parentcustomerid_account");
    assert.equal(all["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], "account");
    const none = await api.retrieve({ collection: "contacts", key: id, select: ["fullname", "createdon"] });
    assert.deepEqual(Object.keys(none).filter((k) => k.includes("@") && k !== "@odata.etag" && k !== "@odata.context"), []);
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/count-rows
  "/<entityset>/$count is a text/plain number; $count=true adds @odata.count": async () => {
    await seedAccounts("Counted", 3);
    const total = (await api.retrieveAll({ collection: "accounts", select: ["accountid"] })).value.length;
    assert.equal(await api.count({ collection: "accounts" }), total);
    assert.equal(await api.count({ collection: "accounts", filter: "address1_city eq 'Counted'" }), 3);
    const resp = await raw("accounts/$count");
    assert.equal(resp.status, 200);
    assert.match(resp.headers.get("content-type"), /^text\/plain/);
    assert.equal(await resp.text(), String(total));
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api
  "If-None-Match with the current ETag: 304 without a body; a changed row is returned": async () => {
    const id = await api.create({ collection: "accounts", data: { name: "Cached" } });
    const row = await api.retrieve({ collection: "accounts", key: id, select: ["name"] });
    const resp = await raw(`accounts(${id})?$select=name`, { "If-None-Match": row["@odata.etag"] });
    assert.equal(resp.status, 304);
    assert.equal(await resp.text(), "");
    await api.update({ collection: "accounts", key: id, data: { name: "Cached, changed" } });
    const changed = await api.retrieve({ collection: "accounts", key: id, select: ["name"], ifnonematch: row["@odata.etag"] });
    assert.equal(changed.name, "Cached, changed");
  },
  "401 without a valid token: WWW-Authenticate names the authority and the resource, the body is empty": async () => {
    for (const bearer of [null, "not-a-token"]) {
      const resp = await raw("accounts?$top=1", {}, bearer);
      assert.equal(resp.status, 401);
      assert.match(resp.headers.get("www-authenticate") ?? "", /^Bearer authorization_uri=https:\/\/login\.microsoftonline\.com\/[0-9a-f-]{36}\/oauth2\/authorize, resource_id=http/);
      assert.equal(await resp.text(), "");
    }
  },
  "an expired token answers 401 (token lifetime set through /_emulator/tokens/lifetime)": async () => {
    const set = await admin("/_emulator/tokens/lifetime", { lifetime: "1ns" });
    assert.equal(set.status, 204);
    try {
      const expired = await getToken();
      const client = new DynamicsWebApi({ serverUrl: env.DATAVERSE_URL, onTokenRefresh: async () => expired, dataApi: { version: "9.2" } });
      const err = await expectError(() => client.retrieveMultiple({ collection: "accounts", top: 1 }));
      assert.equal(err.status, 401);
      assert.match(err.headers["www-authenticate"], /^Bearer authorization_uri=/);
    } finally {
      await admin("/_emulator/tokens/lifetime", { lifetime: "1h" });
    }
    const fresh = await getToken();
    assert.equal((await raw("accounts?$top=1", {}, fresh)).status, 200);
  },
  "unknown entity set: 404 0x80060888 Resource not found for the segment": async () => {
    const err = await expectError(() => api.retrieveMultiple({ collection: "acounts" }));
    assert.equal(err.status, 404);
    assert.equal(err.code, "0x80060888");
    assert.equal(err.message, "Resource not found for the segment 'acounts'.");
  },
  "responses carry OData-Version: 4.0 and JSON with odata.metadata=minimal": async () => {
    const resp = await raw("accounts?$top=1");
    assert.equal(resp.headers.get("odata-version"), "4.0");
    assert.equal(resp.headers.get("content-type"), "application/json; odata.metadata=minimal");
  },
  "nested $expand of lookups, with $select at each level": async () => {
    const sched = await api.create({ collection: "uomschedules", data: { name: "Volume", baseuomname: "litre" } });
    const units = await api.retrieveMultiple({ collection: "uoms", select: ["name"], filter: `_uomscheduleid_value eq ${sched}` });
    const id = await api.create({ collection: "products", data: { name: "Milk", "defaultuomid@odata.bind": `/uoms(${units.value[0].uomid})` } });
    const row = await api.retrieve({ collection: "products", key: id, select: ["name"],
      expand: [{ property: "defaultuomid", select: ["name"], expand: [{ property: "uomscheduleid", select: ["name"] }] }] });
    assert.equal(row.defaultuomid.name, "litre");
    assert.equal(row.defaultuomid.uomscheduleid.name, "Volume");
    assert.equal(row.defaultuomid.quantity, undefined);
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
  "$batch with more than 1000 requests: 400, and nothing runs": async () => {
    api.startBatch();
    for (let i = 0; i < 1001; i++) api.create({ collection: "accounts", data: { name: `Over ${i}`, address1_city: "OverTheLimit" } });
    const err = await expectError(() => api.executeBatch());
    const first = Array.isArray(err) ? err[0] : err;
    assert.equal(first.status, 400);
    assert.equal(await api.count({ collection: "accounts", filter: "address1_city eq 'OverTheLimit'" }), 0);
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
  "error details annotations come only with a preference that names them": async () => {
    const missingId = "00000000-0000-0000-0000-00000000beef";
    const name = "@Microsoft.PowerApps.CDS.ErrorDetails.ApiExceptionMessageName";
    const all = await expectError(() => api.retrieve({ collection: "accounts", key: missingId, includeAnnotations: "*" }));
    assert.equal(all[name], "ObjectDoesNotExist");
    assert.match(all["@Microsoft.PowerApps.CDS.HelpLink"], /error=Microsoft\.Crm\.CrmException%3a80040217/);
    const cds = await expectError(() => api.retrieve({ collection: "accounts", key: missingId, includeAnnotations: "Microsoft.PowerApps.CDS.*" }));
    assert.equal(cds[name], "ObjectDoesNotExist");
    const other = await expectError(() => api.retrieve({ collection: "accounts", key: missingId, includeAnnotations: "OData.Community.Display.V1.FormattedValue" }));
    assert.equal(other[name], undefined);
    const none = await expectError(() => api.retrieve({ collection: "accounts", key: missingId }));
    assert.equal(none[name], undefined);
  },
  // https://learn.microsoft.com/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api
  "If-Match with a stale ETag: 412 0x80060882; If-None-Match: * on an existing row: 412 0x80040237": async () => {
    const strict = new DynamicsWebApi({ serverUrl: env.DATAVERSE_URL, onTokenRefresh: async () => token, dataApi: { version: "9.2" }, propagateErrors: true });
    const row = await api.create({ collection: "accounts", data: { name: "Versioned" }, returnRepresentation: true });
    await api.update({ collection: "accounts", key: row.accountid, data: { name: "Versioned, moved on" } });
    assert.equal(await api.update({ collection: "accounts", key: row.accountid, data: { name: "Stale" }, ifmatch: row["@odata.etag"] }), false);
    const stale = await expectError(() => strict.update({ collection: "accounts", key: row.accountid, data: { name: "Stale" }, ifmatch: row["@odata.etag"] }));
    assert.equal(stale.status, 412);
    assert.equal(stale.code, "0x80060882");
    assert.equal(stale.message, "The version of the existing record doesn't match the RowVersion property provided.");
    const exists = await expectError(() => strict.upsert({ collection: "accounts", key: row.accountid, data: { name: "Again" }, ifnonematch: "*" }));
    assert.equal(exists.status, 412);
    assert.equal(exists.code, "0x80040237");
    assert.equal(exists.message, "A record with matching key values already exists.");
    const gone = await expectError(() => strict.update({ collection: "accounts", key: "00000000-0000-0000-0000-00000000f00d", data: { name: "Nobody" } }));
    assert.equal(gone.status, 404);
    assert.equal(gone.code, "0x80040217");
    const updated = await api.update({ collection: "accounts", key: row.accountid, data: { name: "Represented" }, returnRepresentation: true, select: ["name"] });
    assert.equal(updated.name, "Represented");
    assert.equal(updated.telephone1, undefined);
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
