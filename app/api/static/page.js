"use strict";
// Live status for spotshift's pages: polls each unfinished job's own endpoint
// (never a listing) while the tab is visible, every FIRST_MS at first and less
// often (up to SLOWEST_MS) while nothing changes, and stops once every job on
// the page is done or failed. No framework, no CDN.
(function () {
  const FINAL = new Set(["done", "failed", "gone"]);
  const FIRST_MS = 1500;
  const SLOWEST_MS = 10000;
  let period = FIRST_MS;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  function figure(src, alt, caption) {
    return el("figure", {}, el("img", { src: src, alt: alt, loading: "lazy" }), el("figcaption", {}, caption));
  }

  // Mirrors pages.result_cell on the server.
  function resultCell(job) {
    if (job.status === "done") {
      return [
        el("a", { class: "previews", href: job.links.result },
          figure(job.links.input_thumbnail, "Uploaded image " + job.filename, "uploaded"),
          figure(job.links.result_thumbnail, "Grayscale result of " + job.filename, "grayscale")),
        el("a", { href: job.links.result }, "Open result"),
      ];
    }
    if (job.status === "failed") {
      return [
        el("p", { class: "explanation" }, job.explanation || "Processing failed."),
        el("p", { class: "technical" }, "Technical reason: ", el("code", {}, job.error || "unknown")),
      ];
    }
    const words = job.status === "processing" ? "being processed…" : "waiting for a worker…";
    const parts = [el("span", { class: "pending" }, words)];
    if (job.error) parts.push(el("p", { class: "technical" }, "Retrying after: ", el("code", {}, job.error)));
    return parts;
  }

  // Returns true when the status differs from what the page showed.
  function show(id, status, job) {
    let changed = false;
    document.querySelectorAll('[data-status-of="' + id + '"]').forEach(function (badge) {
      badge.textContent = status;
      badge.className = "status " + status;
    });
    document.querySelectorAll('[data-job="' + id + '"]').forEach(function (node) {
      if (node.dataset.status === status) return;
      changed = true;
      node.dataset.status = status;
      if (node.hasAttribute("data-reload-on-change")) { window.location.reload(); return; }
      const cell = node.querySelector("td.result");
      if (cell && job) cell.replaceChildren(...resultCell(job));
    });
    return changed;
  }

  async function poll() {
    const ids = new Set();
    document.querySelectorAll("[data-job]").forEach(function (node) {
      if (!FINAL.has(node.dataset.status)) ids.add(node.dataset.job);
    });
    if (!ids.size) return;
    let changed = false;
    if (!document.hidden) {
      for (const id of ids) {
        try {
          const response = await fetch("/jobs/" + id, { headers: { Accept: "application/json" } });
          if (response.ok) {
            const job = await response.json();
            changed = show(id, job.status, job) || changed;
          } else if (response.status === 404) {
            changed = show(id, "gone", null) || changed;
          }
        } catch (error) {
          // Offline for a moment: try again on the next round.
        }
      }
    }
    period = changed ? FIRST_MS : Math.min(period * 1.5, SLOWEST_MS);
    window.setTimeout(poll, period);
  }

  document.addEventListener("DOMContentLoaded", function () { window.setTimeout(poll, FIRST_MS); });
})();
