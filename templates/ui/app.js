// A view of the registry, from its own v2 API on the same origin, with token auth:
// the browser holds the basic-auth login it used to load this page, and sends it to
// /auth/ only. /auth/catalog says who is logged in, their role and what they may
// pull; /auth/token gives a short-lived token per repository, sent to /v2/.
"use strict";

const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");
// Config media types of container images; any other config (or an artifactType)
// makes the manifest an artifact, shown by its type, its config unread.
const IMAGE_CONFIGS = [
  "application/vnd.oci.image.config.v1+json",
  "application/vnd.docker.container.image.v1+json",
];
const PAGE = 100;        // items per API page
const SHOWN = 50;        // tags shown at first, then more on request
const PARALLEL = 4;      // manifest requests at once
const EARLY = 30;        // seconds before a token expires that a new one is asked for

const $ = (sel, root = document) => root.querySelector(sel);
const session = { user: "", role: "", service: "" };
const tokens = new Map();  // scope -> { token, expires }

async function json(path, response) {
  if (!response.ok) {
    throw new Error(`${path.split("?")[0]}: ${response.status} ${response.statusText}`);
  }
  return response.json();
}

// A token for scope (one password check per scope, then kept while it is valid).
async function token(scope) {
  const cached = tokens.get(scope);
  if (cached && cached.expires > Date.now()) return cached.token;
  const path = `/auth/token?${new URLSearchParams({ service: session.service, scope })}`;
  const body = await json(path, await fetch(path, { headers: { Accept: "application/json" } }));
  tokens.set(scope, { token: body.token, expires: Date.now() + (body.expires_in - EARLY) * 1000 });
  return body.token;
}

const pullScope = (repo) => `repository:${repo}:pull`;

// A call to the v2 API with a token for scope; the body is read for GET only.
async function api(path, scope, { accept = "application/json", method = "GET" } = {}) {
  const headers = { Accept: accept, Authorization: `Bearer ${await token(scope)}` };
  const response = await fetch(path, { method, headers });
  if (!response.ok) {
    throw Object.assign(new Error(`${path}: ${response.status} ${response.statusText}`), {
      status: response.status,
    });
  }
  return { body: method === "GET" ? await response.json() : null, headers: response.headers };
}

// Every item of a paginated list, following the Link header's rel="next".
async function paged(path, key, scope) {
  const items = [];
  let url = `${path}?n=${PAGE}`;
  while (url) {
    const { body, headers } = await api(url, scope);
    items.push(...(body[key] || []));
    const next = /<([^>]+)>;\s*rel="next"/.exec(headers.get("Link") || "");
    url = next ? next[1] : null;
  }
  return items;
}

function humanSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

async function describe(repo, tag) {
  const base = `/v2/${repo}`;
  const scope = pullScope(repo);
  const { body: manifest, headers } = await api(`${base}/manifests/${tag}`, scope, { accept: MANIFEST_TYPES });
  const out = { digest: headers.get("Docker-Content-Digest") || "", size: 0, platform: "", created: "" };
  if (manifest.manifests) {
    const platforms = manifest.manifests
      .filter((m) => m.platform)
      .map((m) => `${m.platform.os}/${m.platform.architecture}`);
    out.platform = `multi-arch index: ${platforms.join(", ")}`;
    out.size = manifest.manifests.reduce((sum, m) => sum + (m.size || 0), 0);
    return out;
  }
  const layers = manifest.layers || [];
  out.size = (manifest.config?.size || 0) + layers.reduce((sum, l) => sum + (l.size || 0), 0);
  const kind = manifest.artifactType || manifest.config?.mediaType || "";
  if (kind && !IMAGE_CONFIGS.includes(kind)) {
    out.platform = `artifact: ${kind}`;
    return out;
  }
  const { body: config } = await api(`${base}/blobs/${manifest.config.digest}`, scope);
  out.platform = config.architecture ? `${config.os}/${config.architecture}` : "";
  out.created = config.created || "";
  return out;
}

// Run fn over items with at most PARALLEL calls at once.
async function pool(items, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
}

function cell(row, className, text) {
  const td = row.insertCell();
  td.className = className;
  td.textContent = text;
  return td;
}

// A repository's tags; none for one the catalog lists with blobs only (an upload that
// never got a manifest), whose tag list the registry answers with 404.
async function tagsOf(repo) {
  try {
    return await paged(`/v2/${repo}/tags/list`, "tags", pullScope(repo));
  } catch (error) {
    if (error.status === 404) return [];
    throw error;
  }
}

// The tags of repo whose manifest is digest, other than tag: distribution deletes a
// manifest by digest, so deleting one tag deletes them all.
async function tagsSharing(repo, tag, digest) {
  const scope = pullScope(repo);
  const others = (await tagsOf(repo)).filter((t) => t !== tag);
  const sharing = [];
  await pool(others, async (other) => {
    const { headers } = await api(`/v2/${repo}/manifests/${other}`, scope, { accept: MANIFEST_TYPES, method: "HEAD" });
    if (headers.get("Docker-Content-Digest") === digest) sharing.push(other);
  });
  return sharing.sort();
}

async function deleteTag(tbody, repo, tag, digest) {
  const sharing = await tagsSharing(repo, tag, digest);
  const also = sharing.length
    ? `\n\nThese tags share that digest and are deleted with it: ${sharing.join(", ")}.`
    : "";
  if (!confirm(`Delete ${repo}:${tag} (${digest})?${also}\n\nThis cannot be undone.`)) return;
  await api(`/v2/${repo}/manifests/${digest}`, `repository:${repo}:delete`, { method: "DELETE" });
  for (const row of [...tbody.rows]) {
    if (row.dataset.digest === digest) row.remove();
  }
}

function tagRow(tbody, repo, tag) {
  const row = tbody.insertRow();
  row.dataset.tag = tag;
  cell(row, "tag", tag);
  const digest = cell(row, "digest muted", "…");
  const size = cell(row, "size", "");
  const platform = cell(row, "platform", "");
  const created = cell(row, "created", "");
  const pull = cell(row, "pull", "");
  const command = `docker pull ${location.host}/${repo}:${tag}`;
  const code = document.createElement("code");
  code.textContent = command;
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => navigator.clipboard.writeText(command));
  pull.append(code, copy);
  const remove = document.createElement("button");
  if (session.role === "admin") {
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "Delete";
    remove.disabled = true;
    remove.addEventListener("click", () => {
      deleteTag(tbody, repo, tag, row.dataset.digest).catch((e) => showError(e.message));
    });
    pull.append(remove);
  }
  return async () => {
    try {
      const info = await describe(repo, tag);
      row.dataset.digest = info.digest;
      remove.disabled = false;
      digest.textContent = info.digest;
      digest.title = info.digest;
      digest.className = "digest";
      size.textContent = humanSize(info.size);
      platform.textContent = info.platform;
      created.textContent = info.created ? new Date(info.created).toLocaleString() : "";
    } catch (error) {
      digest.textContent = `error: ${error.message}`;
    }
  };
}

async function openRepository(details, repo) {
  if (details.dataset.loaded) return;
  details.dataset.loaded = "yes";
  const tbody = $("tbody", details);
  const more = $(".more", details);
  const tags = (await tagsOf(repo)).sort();
  $(".count", details).textContent = `${tags.length} tag${tags.length === 1 ? "" : "s"}`;
  let shown = 0;
  const showNext = async () => {
    const batch = tags.slice(shown, shown + SHOWN);
    shown += batch.length;
    more.hidden = shown >= tags.length;
    more.textContent = `Show more tags (${tags.length - shown} left)`;
    await pool(batch.map((tag) => tagRow(tbody, repo, tag)), (load) => load());
  };
  more.addEventListener("click", showNext);
  await showNext();
}

function applyFilter() {
  const text = $("#filter").value.trim().toLowerCase();
  for (const details of document.querySelectorAll(".repository")) {
    const name = details.dataset.repository.toLowerCase();
    const tagHit = [...details.querySelectorAll("tbody tr")].some((r) => r.dataset.tag.toLowerCase().includes(text));
    details.hidden = Boolean(text) && !name.includes(text) && !tagHit;
  }
}

function showError(message) {
  const error = $("#error");
  error.textContent = `The registry answered with an error: ${message}`;
  error.hidden = false;
}

async function main() {
  $("#registry-name").textContent = location.host;
  const status = $("#status");
  try {
    const who = await json("/auth/catalog", await fetch("/auth/catalog", { headers: { Accept: "application/json" } }));
    Object.assign(session, { user: who.user, role: who.role, service: who.service });
    $("#who").textContent = `${who.user} (${who.role || "no rights"})`;
    const repositories = who.repositories;
    if (repositories.length === 0) {
      status.textContent = who.role === "pull" || !who.role
        ? "No repositories you may pull yet."
        : `No repositories yet. Push one: docker push ${location.host}/<name>:<tag>`;
      return;
    }
    status.textContent = `${repositories.length} repositor${repositories.length === 1 ? "y" : "ies"}`;
    const template = $("#repository");
    for (const repo of repositories) {
      const details = template.content.firstElementChild.cloneNode(true);
      details.dataset.repository = repo;
      $(".name", details).textContent = repo;
      details.addEventListener("toggle", () => {
        if (details.open) openRepository(details, repo).catch((e) => showError(e.message));
      });
      $("#repositories").append(details);
    }
    if (repositories.length <= 5) {
      for (const details of document.querySelectorAll(".repository")) details.open = true;
    }
  } catch (error) {
    status.textContent = "";
    showError(error.message);
  }
}

$("#filter")?.addEventListener("input", applyFilter);
main();
