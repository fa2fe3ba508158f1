// The dashboard's only script: refreshes server-rendered fragments, counts time left down, and asks
// before a kill. Everything else is plain HTML forms.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const panel of document.querySelectorAll("[data-refresh]")) {
    const every = Number(panel.dataset.every) || 3000;
    const refresh = async () => {
      try {
        const response = await fetch(panel.dataset.refresh, {credentials: "same-origin", cache: "no-store"});
        if (response.ok && !response.redirected) {
          panel.innerHTML = await response.text();
        }
      } catch (error) {
        // The server may be restarting: the next tick tries again.
      }
    };
    setInterval(refresh, every);
  }

  const started = Date.now();
  const cells = Array.from(document.querySelectorAll("[data-left]"));
  const format = (seconds) => {
    if (seconds < 60) return `${seconds}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m ${String(seconds % 60).padStart(2, "0")}s`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return `${hours}h ${String(minutes % 60).padStart(2, "0")}m`;
    return `${Math.floor(hours / 24)}d ${hours % 24}h`;
  };
  if (cells.length) {
    setInterval(() => {
      const gone = Math.floor((Date.now() - started) / 1000);
      for (const cell of cells) {
        cell.textContent = format(Math.max(0, Number(cell.dataset.left) - gone));
      }
    }, 1000);
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
