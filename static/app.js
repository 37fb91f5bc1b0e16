// Latent Gallery: uploads with per-file progress, delete keys in localStorage, share and delete.
"use strict";

(() => {
  // wait=0: the answer comes once the file is received; its card then polls until stored.
  const UPLOAD_URL = "/api/images?wait=0";
  const CARD_URL = "/fragments/card/";
  const UPLOAD_CARD_URL = "/fragments/uploads/";
  const PARALLEL_UPLOADS = 2;
  const UPLOAD_TIMEOUT_MS = 180000;
  // A render the server could not finish in time answers 503; its decode goes on and is cached,
  // so the page asks again, after 1, 2, 4… s (the last wait about a minute after the first).
  const RENDER_RETRIES = 6;
  const RENDER_RETRY_MS = 1000;

  const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const keyName = (imageId) => `lg-delete-${imageId}`;

  // Like the server's `human_bytes` filter: powers of 1000.
  const formatBytes = (bytes) => {
    const units = ["B", "KB", "MB", "GB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} B`;
  };

  const errorMessage = (body, status) =>
    body?.error?.message ?? body?.errors?.[0]?.message ?? `The server answered ${status}.`;

  // Delete keys of no-JS uploads, rendered once into the page.
  function saveRenderedKeys() {
    for (const item of document.querySelectorAll("[data-delete-key]")) {
      localStorage.setItem(keyName(item.dataset.imageId), item.dataset.deleteKey);
    }
  }

  function addRow(list, file) {
    const row = document.createElement("li");
    row.className = "upload-item";
    row.dataset.job = "";
    row.dataset.state = "queued";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const status = document.createElement("span");
    status.className = "upload-status";
    status.textContent = `${formatBytes(file.size)} · waiting`;
    const progress = document.createElement("progress");
    progress.max = 1;
    progress.value = 0;
    progress.setAttribute("aria-label", `Upload of ${file.name}`);
    row.append(name, status, progress);
    list.append(row);
    return row;
  }

  function setRow(row, state, text, fraction) {
    row.dataset.state = state;
    row.querySelector(".upload-status").textContent = text;
    const progress = row.querySelector("progress");
    if (fraction === null) {
      progress.removeAttribute("value"); // indeterminate while the server encodes
    } else {
      progress.value = fraction;
    }
  }

  async function insertCard(grid, url) {
    const response = await fetch(url);
    if (!response.ok) {
      throw new Error(`The new card could not be loaded (${response.status}).`);
    }
    grid.insertAdjacentHTML("afterbegin", await response.text());
    htmx.process(grid.firstElementChild);
    return grid.firstElementChild;
  }

  // 201: stored, its card goes in. 202: still encoding, its "encoding…" card goes in and polls
  // (htmx) until it becomes the image's card, which `cardLoaded` reports back to the row.
  async function finish(row, grid, xhr) {
    const body = xhr.response;
    const image = body?.images?.[0];
    const job = body?.jobs?.[0];
    if (!(xhr.status === 201 && image) && !(xhr.status === 202 && job)) {
      setRow(row, "error", errorMessage(body, xhr.status), 1);
      return;
    }
    if (job) {
      row.dataset.job = job.id;
    } else {
      localStorage.setItem(keyName(image.id), image.delete_key);
    }
    let card;
    try {
      const url = job ? UPLOAD_CARD_URL + job.id : CARD_URL + encodeURIComponent(image.id);
      card = await insertCard(grid, url);
    } catch (error) {
      setRow(row, "error", error.message, 1);
      return;
    }
    if (job) {
      cardLoaded(card); // it may already be the image, or the failure
    } else {
      setRow(row, "done", `Done · stored in ${formatBytes(image.latent_bytes)}`, 1);
    }
  }

  // An upload's card, inserted or swapped in by htmx: still encoding, the image's card (keep
  // its delete key), or the failure (shown in its row, and the card removed).
  function cardLoaded(card) {
    const jobId = card.dataset?.uploadJob;
    const row = jobId && document.querySelector(`.upload-item[data-job="${CSS.escape(jobId)}"]`);
    if (card.dataset?.deleteKey) {
      localStorage.setItem(keyName(card.dataset.imageId), card.dataset.deleteKey);
    }
    if (!row || card.dataset.state === "encoding") {
      return;
    }
    if (card.dataset.state === "error") {
      setRow(row, "error", card.querySelector(".card-placeholder").textContent, 1);
      card.remove(); // the row shows why; the grid keeps only images
    } else {
      setRow(row, "done", `Done · stored in ${card.querySelector(".card-size").textContent}`, 1);
    }
  }

  function uploadOne(file, row, grid) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      const body = new FormData();
      body.append("file", file);
      xhr.open("POST", UPLOAD_URL);
      xhr.responseType = "json";
      xhr.timeout = UPLOAD_TIMEOUT_MS;
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) {
          const percent = Math.round((100 * event.loaded) / event.total);
          setRow(row, "uploading", `Uploading ${percent}%`, event.loaded / event.total);
        }
      });
      xhr.upload.addEventListener("load", () => setRow(row, "encoding", "Encoding to a latent…", null));
      xhr.addEventListener("load", () => finish(row, grid, xhr).then(resolve));
      xhr.addEventListener("error", () => {
        setRow(row, "error", "Network error: the upload did not reach the server.", 1);
        resolve();
      });
      xhr.addEventListener("timeout", () => {
        setRow(row, "error", "The upload timed out.", 1);
        resolve();
      });
      xhr.send(body);
    });
  }

  async function uploadAll(files, list, grid, limit) {
    const queue = [];
    for (const file of files) {
      const row = addRow(list, file);
      if (file.size > limit.bytes) {
        setRow(row, "error", `Too large: ${formatBytes(file.size)} (the limit is ${limit.label}).`, 1);
      } else {
        queue.push({ file, row });
      }
    }
    const worker = async () => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        await uploadOne(job.file, job.row, grid);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_UPLOADS }, worker));
  }

  function initUpload() {
    const form = document.getElementById("upload-form");
    const list = document.getElementById("upload-list");
    const grid = document.getElementById("grid");
    if (!form || !list || !grid) {
      return;
    }
    const input = form.querySelector('input[type="file"]');
    const limit = { bytes: Number(form.dataset.maxBytes), label: form.dataset.maxLabel };
    const start = (files) => {
      if (files.length) {
        uploadAll(files, list, grid, limit);
      }
    };
    input.required = false;
    input.addEventListener("change", () => {
      const files = Array.from(input.files);
      input.value = "";
      start(files);
    });
    form.addEventListener("submit", (event) => event.preventDefault());
    for (const type of ["dragenter", "dragover"]) {
      form.addEventListener(type, (event) => {
        event.preventDefault();
        form.classList.add("dragging");
      });
    }
    form.addEventListener("dragleave", (event) => {
      if (!form.contains(event.relatedTarget)) {
        form.classList.remove("dragging");
      }
    });
    form.addEventListener("drop", (event) => {
      event.preventDefault();
      form.classList.remove("dragging");
      start(Array.from(event.dataTransfer.files).filter((file) => file.type.startsWith("image/")));
    });
  }

  // Images marked `data-retry` (renders) that failed to load are requested again with backoff:
  // setting `src` again, even to the same URL, makes the browser fetch the image anew.
  function retryLater(img) {
    const tries = Number(img.dataset.tries ?? 0);
    if (tries >= RENDER_RETRIES) {
      return;
    }
    img.dataset.tries = String(tries + 1);
    setTimeout(() => img.setAttribute("src", img.getAttribute("src")), RENDER_RETRY_MS * 2 ** tries);
  }

  function initRenderRetries() {
    // `error` does not bubble: listen in the capture phase, for every image, present or future.
    document.addEventListener(
      "error",
      (event) => {
        if (event.target instanceof HTMLImageElement && event.target.matches("img[data-retry]")) {
          retryLater(event.target);
        }
      },
      true,
    );
    // Renders that failed before this script ran.
    for (const img of document.querySelectorAll("img[data-retry]")) {
      if (img.complete && img.getAttribute("src") && !img.naturalWidth) {
        retryLater(img);
      }
    }
  }

  function flashButton(button, text) {
    const original = button.textContent;
    button.textContent = text;
    setTimeout(() => {
      button.textContent = original;
    }, 2000);
  }

  function initShare() {
    const button = document.getElementById("copy-link");
    const field = document.getElementById("share-link");
    if (!button || !field) {
      return;
    }
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        flashButton(button, "Copied!");
      } catch {
        field.focus();
        field.select();
        flashButton(button, "Press Ctrl+C");
      }
    });
  }

  function initDelete() {
    const button = document.getElementById("delete-image");
    const key = button && localStorage.getItem(keyName(button.dataset.imageId));
    if (!key) {
      return;
    }
    const errorBox = document.getElementById("action-error");
    button.hidden = false;
    button.addEventListener("click", async () => {
      if (!window.confirm("Delete this image for everyone? This cannot be undone.")) {
        return;
      }
      button.disabled = true;
      const response = await fetch(button.dataset.deleteUrl, {
        method: "DELETE",
        headers: { "X-Delete-Key": key, "X-CSRF-Token": csrfToken(), Accept: "application/json" },
      });
      if (response.ok || response.status === 404) {
        localStorage.removeItem(keyName(button.dataset.imageId));
        window.location.assign("/");
        return;
      }
      const body = await response.json().catch(() => null);
      errorBox.textContent = errorMessage(body, response.status);
      errorBox.hidden = false;
      button.disabled = false;
    });
  }

  initRenderRetries();
  saveRenderedKeys();
  document.body.addEventListener("htmx:load", (event) => cardLoaded(event.detail.elt));
  initUpload();
  initShare();
  initDelete();
})();
