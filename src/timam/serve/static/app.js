// The search page: talks only to this server's JSON API; thumbnails are /thumb/<row>.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function render(results, what) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of results) {
    const figure = document.createElement("figure");
    figure.className = "hit";
    figure.dataset.row = hit.row;
    figure.dataset.path = hit.path;
    figure.title = hit.path;
    const image = document.createElement("img");
    image.src = hit.thumb;
    image.alt = hit.path;
    image.loading = "lazy";
    const caption = document.createElement("figcaption");
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + hit.rank;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    caption.append(rank, score);
    if (hit.caption) {
      const text = document.createElement("span");
      text.className = "caption";
      text.textContent = hit.caption;
      caption.append(text);
    }
    figure.append(image, caption);
    grid.append(figure);
  }
  grid.dataset.state = "done";
  setStatus(results.length ? `${results.length} ${what}` : "no results");
}

async function call(url, options, what) {
  const buttons = document.querySelectorAll("button");
  buttons.forEach((button) => { button.disabled = true; });
  $("results").dataset.state = "loading";
  setStatus("searching…");
  try {
    const response = await fetch(url, options);
    const body = await response.json();
    if (!response.ok) {
      $("results").dataset.state = "error";
      setStatus(body.error || `error ${response.status}`, true);
      return;
    }
    render(body.results, what + ` (${body.took_ms} ms)`);
  } catch (error) {
    $("results").dataset.state = "error";
    setStatus("the server did not answer: " + error, true);
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
}

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams({ q: $("query").value });
  if ($("k").value) params.set("k", $("k").value);  // an empty box means the server's default k
  history.replaceState(null, "", "/?" + params);  // the address bar holds a link to this search
  call("/api/search?" + params, {}, "images");
});

$("image-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("image").files[0];
  if (!file) {
    setStatus("choose an image file first", true);
    return;
  }
  const form = new FormData();
  form.append("image", file);
  const target = $("target").value;
  const params = new URLSearchParams({ target });
  if ($("k").value) params.set("k", $("k").value);
  call("/api/search/image?" + params, { method: "POST", body: form }, target === "captions" ? "captions" : "images");
});

$("image").addEventListener("change", () => {
  if ($("image").files.length) $("image-form").requestSubmit();
});

fetch("/api/info")
  .then((response) => response.json())
  .then((info) => {
    $("target").hidden = !info.has_captions;
    $("k").max = info.limits.max_k;
    $("footer").textContent =
      `checkpoint ${info.checkpoint_version ?? "(unversioned)"} · index ${info.index_version ?? info.index} · ` +
      `${info.images.toLocaleString()} images · ${info.index_kind} · embedding ${info.embedding_dim}-d`;
  })
  .catch(() => { $("footer").textContent = "index information unavailable"; });

// A link such as /?q=two+airplanes&k=8 runs that search when the page opens.
const opened = new URLSearchParams(location.search);
if (opened.get("q")) {
  $("query").value = opened.get("q");
  if (opened.get("k")) $("k").value = opened.get("k");
  $("text-form").requestSubmit();
}
