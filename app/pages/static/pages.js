// learnkb review pages: keyboard shortcuts for the queue and upload progress.
// Loaded as a file (the pages' CSP allows no inline script).
"use strict";

(function () {
  const items = () => Array.from(document.querySelectorAll("[data-item]"));
  let current = -1;

  function focusItem(index) {
    const all = items();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((el, i) => el.classList.toggle("current", i === current));
    all[current].focus();
    all[current].scrollIntoView({ block: "nearest" });
  }

  function currentItem() {
    const all = items();
    const active = document.activeElement && document.activeElement.closest("[data-item]");
    if (active) {
      current = all.indexOf(active);
      return active;
    }
    return all[current] || null;
  }

  function typing(target) {
    return target && (target.isContentEditable ||
      ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) && target.type !== "checkbox");
  }

  function showHelp() {
    const help = document.getElementById("help");
    if (help && !help.open) help.showModal();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const item = currentItem();
    switch (event.key) {
      case "j": focusItem(current + 1); break;
      case "k": focusItem(current - 1); break;
      case "?": showHelp(); break;
      case "a": {
        const button = item && item.querySelector("[data-action=approve]");
        if (button) button.click(); else return;
        break;
      }
      case "r": {
        const reason = item && item.querySelector("[data-reason]");
        if (reason) reason.focus(); else return;
        break;
      }
      case "e": {
        const edit = item && item.querySelector("[data-edit]");
        if (!edit) return;
        edit.open = true;
        const field = edit.querySelector("textarea[name=answer]");
        if (field) field.focus();
        break;
      }
      case "x": {
        const box = item && item.querySelector("[data-select]");
        if (box) box.checked = !box.checked; else return;
        break;
      }
      default: return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-help]")) showHelp();
  });

  // After an item is redrawn in place, keep the keyboard on it.
  document.addEventListener("htmx:afterSwap", (event) => {
    const swapped = event.detail.target;
    if (swapped && swapped.matches && swapped.matches("[data-item]")) {
      const again = document.getElementById(swapped.id);
      if (again) again.focus();
    }
  });

  // Upload progress, from htmx's XHR progress events.
  document.addEventListener("htmx:xhr:progress", (event) => {
    const form = event.target.closest && event.target.closest("[data-upload]");
    const bar = form && form.querySelector("progress");
    if (!bar || !event.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = Math.round(event.detail.loaded / event.detail.total * 100);
  });
})();
