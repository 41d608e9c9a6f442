// A read-only view of the registry, from its own v2 API on the same origin.
// The browser already holds the basic-auth login it used to load this page.
"use strict";

const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");
const PAGE = 100;        // items per API page
const SHOWN = 50;        // tags shown at first, then more on request
const PARALLEL = 4;      // manifest requests at once

const $ = (sel, root = document) => root.querySelector(sel);

async function api(path, accept = "application/json") {
  const response = await fetch(path, { headers: { Accept: accept } });
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${response.statusText}`);
  }
  return { body: await response.json(), headers: response.headers };
}

// Every item of a paginated list, following the Link header's rel="next".
async function paged(path, key) {
  const items = [];
  let url = `${path}?n=${PAGE}`;
  while (url) {
    const { body, headers } = await api(url);
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
  const { body: manifest, headers } = await api(`${base}/manifests/${tag}`, MANIFEST_TYPES);
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
  const { body: config } = await api(`${base}/blobs/${manifest.config.digest}`);
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
  return async () => {
    try {
      const info = await describe(repo, tag);
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
  const tags = (await paged(`/v2/${repo}/tags/list`, "tags")).sort();
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
    const repositories = await paged("/v2/_catalog", "repositories");
    if (repositories.length === 0) {
      status.textContent = `No repositories yet. Push one: docker push ${location.host}/<name>:<tag>`;
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
