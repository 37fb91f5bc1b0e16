// Latent Gallery: uploads with per-file progress, delete keys in localStorage, share and delete,
// and the image page's viewer (zoom, pan, neighbours by key).
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
  // The viewer zooms from fit to 100% (one image pixel per CSS pixel) and up to 200%.
  const MAX_ZOOM = 2;
  const CLICK_SLOP_PX = 4; // a press that moves less than this is a click, not a drag
  const WHEEL_ZOOM_RATE = 0.002; // the zoom changes by e^(rate × pixels scrolled)
  const WHEEL_LINE_PX = 40;
  const PAN_STEP = 0.1; // of the viewer's size, per arrow key
  const GALLERY_URL = "/";

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

  // Whether a key press belongs to a form field rather than to the page.
  const typing = (target) =>
    target instanceof Element &&
    (target.closest("input, textarea, select") !== null || target.isContentEditable);

  // Where the picture sits at fit, in the frame: its content box (object-fit: contain) and its
  // scale (CSS pixels per image pixel). Layout offsets ignore the zoom's transform.
  function fitted(stage, picture) {
    const width = Number(picture.getAttribute("width"));
    const height = Number(picture.getAttribute("height"));
    const scale = Math.min(picture.offsetWidth / width, picture.offsetHeight / height);
    return {
      width,
      height,
      scale,
      x: stage.offsetLeft + picture.offsetLeft + (picture.offsetWidth - width * scale) / 2,
      y: stage.offsetTop + picture.offsetTop + (picture.offsetHeight - height * scale) / 2,
    };
  }

  // On one axis, where the zoomed picture starts: covering the frame, or centred if smaller.
  const clampAxis = (start, size, room) =>
    size <= room ? (room - size) / 2 : Math.min(0, Math.max(room - size, start));

  // The width of the srcset candidate the picture shows (the full width if none is).
  function shownWidth(picture, fullWidth) {
    for (const candidate of picture.srcset.split(",")) {
      const [url, descriptor] = candidate.trim().split(/\s+/);
      if (url && new URL(url, document.baseURI).href === picture.currentSrc) {
        return Number.parseInt(descriptor, 10);
      }
    }
    return fullWidth;
  }

  // The image page's viewer: a click, Enter/Space on the picture or the toggle button switch
  // between fit and 100% (around the click point); the wheel and a pinch zoom between fit and
  // `MAX_ZOOM`; dragging pans. Zoomed past the pixels of the render shown, the full-size render
  // loads in the background and replaces it once decoded. Returns the keys' controls.
  function initViewer() {
    const frame = document.querySelector(".viewer .frame");
    const stage = frame?.querySelector(".stage");
    const picture = document.getElementById("picture");
    const button = document.getElementById("zoom-toggle");
    const status = document.getElementById("zoom-status");
    if (!stage || !picture || !button || !status) {
      return null;
    }
    // zoom: CSS pixels per image pixel, null at fit; left, top: the picture's corner then.
    const view = { zoom: null, left: 0, top: 0 };
    let full = "idle"; // the full-size render: idle, loading or shown
    const geometry = () => fitted(stage, picture);
    // What a click zooms to: 100%, or `MAX_ZOOM` where the fitted picture is already 100%.
    const clickZoom = (fit) => (fit.scale < 0.99 ? 1 : MAX_ZOOM);

    function render() {
      const fit = geometry();
      const zoomed = view.zoom !== null;
      frame.classList.toggle("zoomed", zoomed);
      button.textContent = zoomed ? "Fit" : `${clickZoom(fit) * 100}%`;
      button.setAttribute("aria-label", zoomed ? "Fit" : `Zoom to ${button.textContent}`);
      if (!zoomed) {
        stage.style.transform = "";
        return;
      }
      const scale = view.zoom / fit.scale; // the stage's transform origin is its corner
      const x = view.left - stage.offsetLeft - scale * (fit.x - stage.offsetLeft);
      const y = view.top - stage.offsetTop - scale * (fit.y - stage.offsetTop);
      stage.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    }

    function loadFull() {
      const fit = geometry();
      const shown = shownWidth(picture, fit.width);
      const needed = (view.zoom ?? fit.scale) * fit.width * window.devicePixelRatio;
      if (full !== "idle" || !picture.currentSrc || shown >= fit.width || needed <= shown) {
        return;
      }
      full = "loading";
      status.textContent = "Loading full resolution…";
      const loader = new Image();
      loader.src = picture.dataset.full;
      loader.decode().then(
        () => {
          picture.removeAttribute("srcset");
          picture.removeAttribute("sizes");
          picture.src = loader.src;
          full = "shown";
          status.textContent = "";
        },
        () => {
          full = "idle"; // the next zoom asks again
          status.textContent = "Full resolution did not load.";
        },
      );
    }

    // Keep the zoomed picture covering the frame (or centred), then draw it.
    function place() {
      if (view.zoom !== null) {
        const fit = geometry();
        view.zoom = Math.max(view.zoom, fit.scale);
        view.left = clampAxis(view.left, fit.width * view.zoom, frame.clientWidth);
        view.top = clampAxis(view.top, fit.height * view.zoom, frame.clientHeight);
      }
      render();
    }

    // Zoom to `zoom` (between fit and `MAX_ZOOM`), keeping the image point at (x, y) there.
    function zoomAt(zoom, x, y) {
      const fit = geometry();
      const current = view.zoom ?? fit.scale;
      const left = view.zoom === null ? fit.x : view.left;
      const top = view.zoom === null ? fit.y : view.top;
      const next = Math.min(Math.max(zoom, fit.scale), Math.max(MAX_ZOOM, fit.scale));
      if (next <= fit.scale * 1.001) {
        view.zoom = null;
      } else {
        view.left = x - ((x - left) / current) * next;
        view.top = y - ((y - top) / current) * next;
        view.zoom = next;
      }
      place();
      loadFull();
    }

    function panBy(dx, dy) {
      view.left += dx;
      view.top += dy;
      place();
    }

    // Switch between fit and the click zoom around (x, y), eased (`.easing`).
    function toggleAt(x, y) {
      frame.classList.add("easing");
      zoomAt(view.zoom === null ? clickZoom(geometry()) : 0, x, y);
    }

    function fit() {
      frame.classList.add("easing");
      zoomAt(0, 0, 0);
    }

    function toggleAtCentre() {
      const fit = geometry();
      toggleAt(fit.x + (fit.width * fit.scale) / 2, fit.y + (fit.height * fit.scale) / 2);
    }

    const local = (event) => {
      const box = frame.getBoundingClientRect();
      return { x: event.clientX - box.left, y: event.clientY - box.top };
    };

    // Pointers down on the frame: one drags (or clicks, if it hardly moves), two pinch.
    const pointers = new Map();
    let press = null; // where the first pointer went down, and whether it became a gesture
    frame.addEventListener("pointerdown", (event) => {
      const mouseButton = event.pointerType === "mouse" && event.button !== 0;
      if (mouseButton || event.target.closest(".zoom-tools")) {
        return;
      }
      frame.setPointerCapture(event.pointerId);
      frame.classList.remove("easing");
      pointers.set(event.pointerId, local(event));
      if (pointers.size === 1) {
        press = { start: local(event), moved: false };
      } else {
        press.moved = true; // a pinch, not a click
      }
    });
    frame.addEventListener("pointermove", (event) => {
      const before = pointers.get(event.pointerId);
      if (!before) {
        return;
      }
      const [a, b] = pointers.values();
      pointers.set(event.pointerId, local(event));
      if (b) {
        const [c, d] = pointers.values();
        const spread = Math.hypot(c.x - d.x, c.y - d.y) / Math.hypot(a.x - b.x, a.y - b.y);
        const middle = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
        zoomAt((view.zoom ?? geometry().scale) * spread, middle.x, middle.y);
        panBy((c.x + d.x) / 2 - middle.x, (c.y + d.y) / 2 - middle.y);
        return;
      }
      const point = pointers.get(event.pointerId);
      const travel = Math.hypot(point.x - press.start.x, point.y - press.start.y);
      if (travel >= CLICK_SLOP_PX) {
        press.moved = true;
      }
      if (press.moved && view.zoom !== null) {
        frame.classList.add("panning");
        panBy(point.x - before.x, point.y - before.y);
      }
    });
    const release = (event) => {
      if (!pointers.delete(event.pointerId) || pointers.size) {
        return;
      }
      frame.classList.remove("panning");
      if (event.type === "pointerup" && !press.moved) {
        toggleAt(press.start.x, press.start.y);
      }
      press = null;
    };
    frame.addEventListener("pointerup", release);
    frame.addEventListener("pointercancel", release);

    frame.addEventListener(
      "wheel",
      (event) => {
        const line = event.deltaMode === WheelEvent.DOM_DELTA_LINE;
        const pixels = event.deltaY * (line ? WHEEL_LINE_PX : 1);
        if (view.zoom === null && pixels >= 0) {
          return; // nothing to zoom out of: the page scrolls
        }
        event.preventDefault();
        frame.classList.remove("easing");
        const { x, y } = local(event);
        zoomAt((view.zoom ?? geometry().scale) * Math.exp(-pixels * WHEEL_ZOOM_RATE), x, y);
      },
      { passive: false },
    );

    picture.tabIndex = 0;
    picture.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        toggleAtCentre();
      }
    });
    picture.addEventListener("load", loadFull);
    button.addEventListener("click", toggleAtCentre);
    button.hidden = false;
    window.addEventListener("resize", place);
    render();

    return {
      zoomed: () => view.zoom !== null,
      fit,
      pan: (dx, dy) => panBy(dx * PAN_STEP * frame.clientWidth, dy * PAN_STEP * frame.clientHeight),
    };
  }

  // Keys on the image page (none with a modifier, none while typing): Left/Right follow the
  // Newer/Older links, or pan while zoomed (as Up/Down do); Escape leaves the zoom, or else goes
  // back to the gallery.
  function initImageKeys(viewer) {
    if (!viewer) {
      return;
    }
    const pans = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    const links = { ArrowLeft: 'a[rel="prev"]', ArrowRight: 'a[rel="next"]' };
    document.addEventListener("keydown", (event) => {
      const modified = event.altKey || event.ctrlKey || event.metaKey || event.shiftKey;
      if (event.defaultPrevented || modified || typing(event.target)) {
        return;
      }
      const link = !viewer.zoomed() && links[event.key] && document.querySelector(links[event.key]);
      if (event.key === "Escape" && viewer.zoomed()) {
        viewer.fit();
      } else if (event.key === "Escape") {
        window.location.assign(GALLERY_URL);
      } else if (viewer.zoomed() && pans[event.key]) {
        viewer.pan(...pans[event.key]);
      } else if (link) {
        window.location.assign(link.href);
      } else {
        return;
      }
      event.preventDefault();
    });
  }

  initRenderRetries();
  saveRenderedKeys();
  document.body.addEventListener("htmx:load", (event) => cardLoaded(event.detail.elt));
  initUpload();
  initShare();
  initDelete();
  initImageKeys(initViewer());
})();
