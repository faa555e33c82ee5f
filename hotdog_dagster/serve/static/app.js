// The search page: builds the same fields `hotdog search` takes, posts them to /api/search,
// draws the grid. Every value reaches the page through textContent or attributes, never as HTML.
"use strict";

const config = JSON.parse(document.getElementById("hotdog-config").textContent);
const $ = (id) => document.getElementById(id);
const form = $("query");
const partRows = $("part-rows");
const modifierRows = $("modifier-rows");
let offset = 0;

// -- query parts -----------------------------------------------------------------------------

function addPart(kind, value = "", weight = 1, thumb = null) {
  const row = $("part-template").content.firstElementChild.cloneNode(true);
  row.dataset.kind = kind;
  row.querySelector(".kind").textContent = { text: "text", url: "image URL", upload: "upload", id: "image" }[kind];
  const slot = row.querySelector(".value");
  if (kind === "upload") {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = "image/*";
    input.className = "file";
    slot.append(input);
  } else if (kind === "id") {
    const img = document.createElement("img");
    img.src = thumb || `/thumb/${encodeURIComponent(value)}?size=64`;
    img.alt = value;
    const label = document.createElement("code");
    label.textContent = value;
    slot.append(img, label);
    row.dataset.value = value;
  } else {
    const input = document.createElement("input");
    input.type = kind === "url" ? "url" : "text";
    input.className = "text";
    input.placeholder = kind === "url" ? "https://example.com/image.png" : "e.g. a face";
    input.value = value;
    slot.append(input);
  }
  row.querySelector(".weight").value = weight;
  row.querySelector(".remove").addEventListener("click", () => row.remove());
  partRows.append(row);
  return row;
}

function addModifier(op = "multiply_score_by", field = null, weight = 1) {
  const row = $("modifier-template").content.firstElementChild.cloneNode(true);
  row.querySelector(".op").value = op;
  if (field) row.querySelector(".field").value = field;
  row.querySelector(".weight").value = weight;
  row.querySelector(".remove").addEventListener("click", () => row.remove());
  modifierRows.append(row);
}

$("add-text").addEventListener("click", () => addPart("text").querySelector("input").focus());
$("add-url").addEventListener("click", () => addPart("url").querySelector("input").focus());
$("add-upload").addEventListener("click", () => addPart("upload").querySelector("input").click());
$("add-modifier").addEventListener("click", () => addModifier());

// -- fields: one builder for the request and the address bar ------------------------------------

function fields(includeUploads) {
  const out = new FormData();
  for (const row of partRows.children) {
    const weight = row.querySelector(".weight").value || "1";
    const kind = row.dataset.kind;
    if (kind === "upload") {
      const file = row.querySelector("input[type=file]").files[0];
      if (file && includeUploads) {
        out.append("upload", file);
        out.append("upload_weight", weight);
      }
    } else if (kind === "id") {
      out.append("like", `${row.dataset.value}:${weight}`);
    } else {
      const value = row.querySelector("input").value;
      if (value.trim()) out.append(kind === "url" ? "image" : "text", `${value}:${weight}`);
    }
  }
  for (const name of ["mode", "alpha", "space", "image_space_weight", "description_space_weight", "filter", "limit"]) {
    if ($(name).value !== "") out.append(name, $(name).value);
  }
  out.append("include_flagged", $("include_flagged").checked ? "true" : "false");
  for (const row of modifierRows.children) {
    out.append(row.querySelector(".op").value, `${row.querySelector(".field").value}:${row.querySelector(".weight").value || "1"}`);
  }
  out.append("offset", String(offset));
  return out;
}

function remember() {
  const params = new URLSearchParams();
  for (const [name, value] of fields(false)) params.append(name, value);
  history.replaceState(null, "", `?${params}`);
}

function restore() {
  const params = new URLSearchParams(location.search);
  for (const spec of params.getAll("text")) {
    const m = spec.match(/^(.*):([-+]?[\d.]+(?:e[-+]?\d+)?)$/is);
    addPart("text", m ? m[1] : spec, m ? m[2] : 1);
  }
  for (const spec of params.getAll("image")) {
    const m = spec.match(/^(.*):([-+]?[\d.]+(?:e[-+]?\d+)?)$/is);
    addPart("url", m ? m[1] : spec, m ? m[2] : 1);
  }
  for (const spec of params.getAll("like")) {
    const m = spec.match(/^(.*):([-+]?[\d.]+(?:e[-+]?\d+)?)$/is);
    addPart("id", m ? m[1] : spec, m ? m[2] : 1);
  }
  for (const op of ["multiply_score_by", "add_to_score"]) {
    for (const spec of params.getAll(op)) {
      const m = spec.match(/^(.*):([-+]?[\d.]+(?:e[-+]?\d+)?)$/is);
      addModifier(op, m ? m[1] : spec, m ? m[2] : 1);
    }
  }
  for (const name of ["mode", "alpha", "space", "image_space_weight", "description_space_weight", "filter", "limit"]) {
    if (params.has(name)) $(name).value = params.get(name);
  }
  $("include_flagged").checked = params.get("include_flagged") === "true";
  offset = Number(params.get("offset") || 0);
  return partRows.children.length > 0;
}

// -- search and results --------------------------------------------------------------------------

function showError(body) {
  const box = $("filter-error");
  const filterInput = $("filter");
  if (body.input === "filter") {
    box.textContent = body.error;
    box.hidden = false;
    filterInput.setAttribute("aria-invalid", "true");
    if (body.position !== null && body.position !== undefined) {
      filterInput.focus();
      filterInput.setSelectionRange(body.position, Math.min(body.position + 1, filterInput.value.length));
    }
    setStatus("the filter has an error (shown under it)", true);
  } else {
    setStatus(body.error, true);
  }
}

function clearErrors() {
  $("filter-error").hidden = true;
  $("filter-error").textContent = "";
  $("filter").removeAttribute("aria-invalid");
  setStatus("");
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function fmt(x, digits = 4) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function card(hit, rank) {
  const figure = document.createElement("figure");
  figure.className = "card";
  figure.dataset.id = hit.id;
  const img = document.createElement("img");
  img.src = hit.thumbnail;
  img.alt = hit.caption || hit.id;
  img.loading = "lazy";
  img.title = "search with this image (shift-click: add it to the query)";
  img.addEventListener("click", (event) => {
    if (!event.shiftKey) partRows.replaceChildren();
    addPart("id", hit.id, 1, hit.thumbnail);
    offset = 0;
    search();
  });
  const caption = document.createElement("figcaption");
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = `#${rank} · ${fmt(hit.score)}`;
  caption.append(score);
  const sub = [];
  for (const side of ["vector", "keyword"]) {
    const rank = hit[`${side}_rank`];
    if (rank === undefined) continue;
    sub.push(rank === null ? `${side} –` : `${side} #${rank} ${fmt(hit[`${side}_score`], 3)}`);
  }
  if (hit.raw_score !== undefined) sub.push(`raw ${fmt(hit.raw_score)}`);
  if (sub.length) {
    const line = document.createElement("div");
    line.className = "sub";
    line.textContent = sub.join(" · ");
    caption.append(line);
  }
  for (const text of [hit.caption, hit.top_label && `top label: ${hit.top_label} (${fmt(hit.top_probability, 2)})`]) {
    if (text) {
      const line = document.createElement("div");
      line.textContent = text;
      caption.append(line);
    }
  }
  if (hit.keep === false) {
    const line = document.createElement("div");
    line.className = "sub";
    line.textContent = "flagged";
    caption.append(line);
  }
  const id = document.createElement("div");
  id.className = "id";
  id.textContent = hit.id;
  caption.append(id);
  figure.append(img, caption);
  return figure;
}

async function search() {
  clearErrors();
  if (partRows.children.length === 0) {
    setStatus("add a text, an image URL, an upload, or click an image", true);
    return;
  }
  setStatus("searching…");
  $("search").disabled = true;
  try {
    const response = await fetch("/api/search", { method: "POST", body: fields(true) });
    const body = await response.json();
    if (!response.ok) {
      showError(body);
      return;
    }
    remember();
    const limit = body.limit;
    $("grid").replaceChildren(...body.hits.map((hit, i) => card(hit, body.offset + i + 1)));
    setStatus(body.count ? `${body.count} hit(s), ${body.mode} ranking` : "no hits");
    $("page-label").textContent = body.count ? `${body.offset + 1}–${body.offset + body.count}` : "";
    $("prev").disabled = body.offset === 0;
    $("next").disabled = body.count < limit;
  } catch (error) {
    setStatus(`the server did not answer: ${error}`, true);
  } finally {
    $("search").disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  offset = 0;
  search();
});
$("prev").addEventListener("click", () => {
  offset = Math.max(0, offset - Number($("limit").value));
  search();
});
$("next").addEventListener("click", () => {
  offset += Number($("limit").value);
  search();
});

if (restore()) {
  search();
} else {
  addPart("text");
}
