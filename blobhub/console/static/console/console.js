// The BlobHub web console: hash routes over the REST API (/v1/) and one WebSocket (/v1/ws),
// both authenticated by the session cookie. Data is only ever inserted as text (h() appends
// strings as text nodes), never as HTML.

const view = document.getElementById("view");
const notice = document.getElementById("notice");
const badge = document.getElementById("live");
const LOGIN_URL = "/console/login/?next=/console/";

const BLOB_TYPES = ["blobhub.compute.workflow", "blobhub.compute.scheduler", "blobhub.model.onnx"];

// --- DOM and errors -------------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value != null) node.setAttribute(name, value);
  }
  node.append(...children.flat().filter((child) => child != null));
  return node;
}

const enc = encodeURIComponent;

function showError(error) {
  notice.textContent = error.message;
  notice.hidden = false;
}

function clearError() {
  notice.hidden = true;
  notice.textContent = "";
}

// Runs a form's action with its button disabled; an API error is shown, not thrown.
function onSubmit(action) {
  return async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      clearError();
      await action(new FormData(form), form);
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  };
}

function onClick(action) {
  return async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      clearError();
      await action();
    } catch (error) {
      showError(error);
      button.disabled = false;
    }
  };
}

function table(headings, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headings.map((text) => h("th", {}, text)))), h("tbody", {}, rows));
}

const when = (timestamp) => (timestamp ? timestamp.slice(0, 19).replace("T", " ") : "");

// --- REST -------------------------------------------------------------------------------------

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/v1/${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    location.assign(LOGIN_URL); // the session ended
  }
  const data = await response.json().catch(() => null);
  if (!response.ok || data?.status !== "success") {
    throw new Error(data?.message || `The server answered ${response.status}.`);
  }
  return data;
}

// --- WebSocket: one connection, subscriptions renewed on every (re)connect --------------------

const live = { socket: null, nextId: 1, pending: new Map(), subscriptions: new Map(), retries: 0 };

// A subscription the server refused (the blob deleted, access removed) is not asked for again.
const wanted = () => [...live.subscriptions.values()].filter((sub) => !sub.refused);

function setBadge() {
  const open = live.socket?.readyState === WebSocket.OPEN;
  const refused = wanted().length < live.subscriptions.size;
  const ready = wanted().every((sub) => sub.ready);
  const state = refused ? "offline" : !open ? (live.socket ? "connecting" : "offline") : ready ? "live" : "connecting";
  badge.dataset.state = state;
  badge.textContent = state;
}

function liveConnect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`);
  live.socket = socket;
  setBadge();
  socket.addEventListener("open", () => {
    live.retries = 0;
    wanted().forEach(liveAdd);
    setBadge();
  });
  socket.addEventListener("message", (message) => liveReceive(JSON.parse(message.data)));
  socket.addEventListener("close", (event) => {
    live.socket = null;
    live.pending.forEach(({ reject }) => reject(new Error("The live connection closed.")));
    live.pending.clear();
    live.subscriptions.forEach((sub) => (sub.ready = false));
    setBadge();
    if (event.code === 4401) {
      showError(new Error("Live updates are unavailable: sign in again."));
    } else if (wanted().length) {
      setTimeout(liveConnect, Math.min(30000, 1000 * 2 ** live.retries++));
    }
  });
}

function rpc(method, params) {
  return new Promise((resolve, reject) => {
    const id = live.nextId++;
    live.pending.set(id, { resolve, reject });
    live.socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  });
}

function liveReceive(message) {
  if (message.method === "subscription/event") {
    const { event, ...params } = message.params;
    live.subscriptions.get(subscriptionKey(params))?.onEvent(event);
  } else if (live.pending.has(message.id)) {
    const { resolve, reject } = live.pending.get(message.id);
    live.pending.delete(message.id);
    if (message.error) reject(Object.assign(new Error(message.error.message), { refused: true }));
    else resolve(message.result);
  }
}

const subscriptionKey = ({ scope, scope_id, target, target_id }) => [scope, scope_id, target, target_id].join(" ");

// Once the subscription holds, onReady reloads the view, so nothing changed before it is missed.
async function liveAdd(sub) {
  try {
    await rpc("subscription/add", sub.params);
    sub.ready = true;
    setBadge();
    await sub.onReady();
  } catch (error) {
    sub.refused = Boolean(error.refused); // the server answered no: asking again will not help
    setBadge();
    showError(sub.refused ? new Error(`Live updates stopped: ${error.message}`) : error);
  }
}

// Subscribes while a view is shown; returns the function that ends it.
function subscribe(params, onEvent, onReady) {
  const sub = { params, onEvent, onReady, ready: false };
  live.subscriptions.set(subscriptionKey(params), sub);
  if (!live.socket) liveConnect();
  else if (live.socket.readyState === WebSocket.OPEN) liveAdd(sub);
  setBadge();
  return () => {
    live.subscriptions.delete(subscriptionKey(params));
    if (live.socket?.readyState === WebSocket.OPEN) rpc("subscription/remove", params).catch(() => {});
    setBadge();
  };
}

// --- Views --------------------------------------------------------------------------------

async function showOrganizations() {
  const { organizations } = await api("GET", "users/me/orgs?limit=200");
  const items = organizations.map((org) =>
    h("li", {}, h("a", { href: `#/orgs/${enc(org.alias)}` }, org.name || org.alias), " ", h("span", { class: "muted" }, org.alias)),
  );
  return [
    h("h1", {}, "Organizations"),
    items.length ? h("ul", { class: "list" }, items) : h("p", {}, "You are not a member of any organization."),
  ];
}

async function showOrganization(orgRef) {
  const [{ organization }, { blobs, cursor }] = await Promise.all([
    api("GET", `orgs/${enc(orgRef)}`),
    api("GET", `orgs/${enc(orgRef)}/blobs?limit=200`),
  ]);
  const org = organization.alias;
  const rows = blobs.map((blob) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/orgs/${enc(org)}/blobs/${enc(blob.alias)}` }, blob.alias)),
      h("td", {}, blob.type),
      h("td", {}, blob.visibility),
      h("td", {}, when(blob.updated_at)),
    ),
  );
  const createBlob = onSubmit(async (form) => {
    const { blob } = await api("POST", `orgs/${enc(org)}/blobs`, { alias: form.get("alias"), type: form.get("type") });
    location.hash = `#/orgs/${enc(org)}/blobs/${enc(blob.alias)}`;
  });
  return [
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Organizations"), " / ", org),
    h("h1", {}, organization.name || org),
    h("section", {}, h("h2", {}, "Blobs"), rows.length ? table(["Alias", "Type", "Visibility", "Updated"], rows) : h("p", {}, "No blobs yet."),
      cursor ? h("p", { class: "muted" }, "Showing the first 200 blobs.") : null,
      h("form", { class: "inline", id: "new-blob", onsubmit: createBlob },
        h("label", {}, "Alias ", h("input", { name: "alias", required: true, pattern: "[a-z0-9_\\-]{6,42}", title: "6-42 of a-z, 0-9, _ and -" })),
        h("label", {}, "Type ", h("select", { name: "type" }, BLOB_TYPES.map((type) => h("option", { value: type }, type)))),
        h("button", { type: "submit" }, "New blob"),
      ),
    ),
    await apiKeysSection(org),
  ];
}

async function apiKeysSection(org) {
  const section = h("section", { id: "api-keys" }, h("h2", {}, "API keys"));
  const body = h("div");
  const secret = h("div", { id: "new-key", class: "secret", hidden: true });

  async function load() {
    const { api_keys } = await api("GET", `orgs/${enc(org)}/api_keys?limit=200`);
    const rows = api_keys.map((key) =>
      h("tr", { "data-key": key.id },
        h("td", {}, key.description || "(no description)"),
        h("td", {}, key.role),
        h("td", {}, when(key.created_at)),
        h("td", {}, key.expires_at ? when(key.expires_at) : "never"),
        h("td", {}, key.last_used_at ? when(key.last_used_at) : "never"),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: onClick(() => revoke(key)) }, "Revoke")),
      ),
    );
    body.replaceChildren(rows.length ? table(["Description", "Role", "Created", "Expires", "Last used", ""], rows) : h("p", {}, "No API keys."));
  }

  function hideSecret() {
    secret.replaceChildren();
    secret.hidden = true;
  }

  async function revoke(key) {
    if (!confirm(`Revoke the key "${key.description || key.id}"? Clients using it stop working at once.`)) return load();
    await api("DELETE", `orgs/${enc(org)}/api_keys/${enc(key.id)}`);
    await load();
  }

  const create = onSubmit(async (form, element) => {
    const { api_key } = await api("POST", `orgs/${enc(org)}/api_keys`, { role: form.get("role"), description: form.get("description") });
    secret.replaceChildren(
      h("p", {}, "Your new API key. Copy it now: it will not be shown again."),
      h("code", {}, api_key.key),
      h("button", { type: "button", class: "link", onclick: hideSecret }, "Done"),
    );
    secret.hidden = false;
    element.reset();
    await load();
  });

  try {
    await load();
  } catch (error) {
    body.replaceChildren(h("p", { class: "muted" }, error.message)); // keys need the admin role
    section.append(body);
    return section;
  }
  section.append(secret, body,
    h("form", { class: "inline", id: "new-key-form", onsubmit: create },
      h("label", {}, "Description ", h("input", { name: "description", maxlength: 256 })),
      h("label", {}, "Role ", h("select", { name: "role" }, h("option", { value: "read" }, "read"), h("option", { value: "write" }, "write"))),
      h("button", { type: "submit" }, "Create key"),
    ),
  );
  return section;
}

function revisionActions(revision, reload) {
  const action = (label, verb) =>
    h("button", { type: "button", onclick: onClick(async () => {
      const answer = await api("POST", `revisions/${enc(revision.id)}/${verb}`, {});
      // A commit runs as an operation: its progress arrives over the WebSocket.
      if (answer.revision) await reload();
    }) }, label);
  if (revision.phase === "draft" && ["ready", "failed"].includes(revision.status)) return action("Commit", "commit");
  if (revision.phase === "commit" && revision.status === "ready") return action("Snapshot", "snapshot");
  return null;
}

function revisionRow(revision, reload) {
  return h("tr", { "data-number": revision.number },
    h("td", {}, String(revision.number)),
    h("td", { class: "phase" }, revision.phase),
    h("td", { class: "status", "data-status": revision.status }, revision.status, revision.failure ? h("div", { class: "muted" }, revision.failure) : null),
    h("td", {}, revision.comment || ""),
    h("td", {}, when(revision.created_at)),
    h("td", {}, revisionActions(revision, reload)),
  );
}

async function showBlob(orgRef, blobRef) {
  const path = `blobs/${enc(orgRef)}/${enc(blobRef)}`;
  let { blob } = await api("GET", path);
  const summary = h("p", { class: "muted" });
  const revisionsBody = h("div", { id: "revisions" });
  const metadataBody = h("div", { id: "metadata" });
  const rows = new Map(); // revision id -> {revision, row}

  function renderSummary() {
    const current = [...rows.values()].find(({ revision }) => revision.id === blob.default_revision_id);
    summary.replaceChildren(`${blob.type} · ${blob.visibility} · default revision: ${current ? current.revision.number : "none"}`,
      blob.description ? ` · ${blob.description}` : "");
  }

  async function loadRevisions() {
    const [{ blob: fresh }, { revisions, cursor }] = await Promise.all([api("GET", path), api("GET", `${path}/revisions?limit=200`)]);
    blob = fresh;
    rows.clear();
    const trs = revisions.map((revision) => {
      const row = revisionRow(revision, loadRevisions);
      rows.set(revision.id, { revision, row });
      return row;
    });
    revisionsBody.replaceChildren(table(["#", "Phase", "Status", "Comment", "Created", ""], trs),
      cursor ? h("p", { class: "muted" }, "Showing the newest 200 revisions.") : "");
    renderSummary();
  }

  async function loadMetadata() {
    const { metadata } = await api("GET", `${path}/metadata?limit=200`);
    const trs = metadata.map((item) =>
      h("tr", {},
        h("td", {}, item.key),
        h("td", {}, h("code", {}, JSON.stringify(item.value))),
        h("td", {}, when(item.updated_at)),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: onClick(async () => {
          await api("DELETE", `${path}/metadata/${enc(item.key)}`);
          await loadMetadata();
        }) }, "Delete")),
      ),
    );
    metadataBody.replaceChildren(trs.length ? table(["Key", "Value", "Updated", ""], trs) : h("p", {}, "No metadata."));
  }

  // Redraws one revision's row from the API (the event carries no failure reason). Answers to
  // earlier events that come late are dropped; if the revision cannot be read, reload all.
  const asked = new Map(); // revision id -> the number of its latest request
  async function refreshRevision(id) {
    const request = (asked.get(id) ?? 0) + 1;
    asked.set(id, request);
    const { revision } = await api("GET", `revisions/${enc(id)}`);
    const entry = rows.get(id);
    if (asked.get(id) !== request || !entry) return;
    const row = revisionRow(revision, loadRevisions);
    entry.row.replaceWith(row);
    rows.set(id, { revision, row });
  }

  // A revision's change redraws its row; anything else reloads what it touches.
  function onEvent(event) {
    const id = event.data?.revision_id;
    if (event.type === "revision.updated" && rows.has(id)) {
      refreshRevision(id).catch(() => loadRevisions().catch(showError));
    } else if (event.type.startsWith("revision.") || event.type.startsWith("blob.")) {
      loadRevisions().catch(showError);
    } else if (event.type === "metadata.changed") {
      loadMetadata().catch(showError);
    }
  }

  const newDraft = onSubmit(async (form, element) => {
    await api("POST", `${path}/revisions`, { comment: form.get("comment") });
    element.reset();
    await loadRevisions();
  });
  const addMetadata = onSubmit(async (form, element) => {
    let value;
    try {
      value = JSON.parse(form.get("value"));
    } catch {
      throw new Error("The value is not JSON (a string needs quotes).");
    }
    await api("POST", `${path}/metadata`, { key: form.get("key"), value });
    element.reset();
    await loadMetadata();
  });

  await Promise.all([loadRevisions(), loadMetadata()]);
  const leave = subscribe(
    { scope: "core", scope_id: blob.org_id, target: "blob", target_id: blob.id },
    onEvent,
    () => Promise.all([loadRevisions(), loadMetadata()]),
  );
  const nodes = [
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Organizations"), " / ", h("a", { href: `#/orgs/${enc(orgRef)}` }, orgRef), " / ", blob.alias),
    h("h1", {}, blob.alias),
    summary,
    h("section", {}, h("h2", {}, "Revisions"), revisionsBody,
      h("form", { class: "inline", id: "new-draft", onsubmit: newDraft },
        h("label", {}, "Comment ", h("input", { name: "comment", required: true, maxlength: 200 })),
        h("button", { type: "submit" }, "New draft from default"),
      ),
    ),
    h("section", {}, h("h2", {}, "Metadata"), metadataBody,
      h("form", { class: "inline", id: "new-metadata", onsubmit: addMetadata },
        h("label", {}, "Key ", h("input", { name: "key", required: true, maxlength: 128 })),
        h("label", {}, "Value (JSON) ", h("input", { name: "value", required: true })),
        h("button", { type: "submit" }, "Add"),
      ),
    ),
  ];
  return { nodes, leave };
}

// --- Routing --------------------------------------------------------------------------------

const routes = [
  [/^#\/orgs\/([^/]+)\/blobs\/([^/]+)$/, showBlob],
  [/^#\/orgs\/([^/]+)$/, showOrganization],
  [/^(#\/?)?$/, showOrganizations],
];

let shown = 0; // the navigation being shown: a slower, older one must not overwrite it
let leave = null;

async function route() {
  const navigation = ++shown;
  leave?.();
  leave = null;
  clearError();
  const match = routes.map(([pattern, show]) => [location.hash.match(pattern), show]).find(([found]) => found);
  if (!match) {
    view.replaceChildren(h("p", {}, "No such page. "), h("a", { href: "#/" }, "Organizations"));
    return;
  }
  const [found, show] = match;
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const result = await show(...found.slice(1).map(decodeURIComponent));
    const { nodes, leave: end } = Array.isArray(result) ? { nodes: result } : result;
    if (navigation !== shown) return end?.();
    view.replaceChildren(...nodes);
    leave = end;
  } catch (error) {
    if (navigation !== shown) return;
    view.replaceChildren();
    showError(error);
  }
}

window.addEventListener("hashchange", route);
route();
