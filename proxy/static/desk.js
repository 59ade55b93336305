// Airlock's approval desk: keeps the pending list live. The server says when requests
// change (server-sent events); the list is then fetched again and patched in place:
// new requests appear, decided, withdrawn and timed-out ones leave, and a card being
// filled in is left alone. Without this script the page works the same on reload.
"use strict";
(function () {
  const list = document.getElementById("pending");
  if (!list || !window.EventSource || !window.fetch) return;
  let fetching = false;
  let again = false;

  function edited(card) {
    if (card.contains(document.activeElement)) return true;
    for (const field of card.querySelectorAll("input, textarea")) {
      if (field.type !== "hidden" && field.value !== field.defaultValue) return true;
    }
    for (const option of card.querySelectorAll("option")) {
      if (option.selected !== option.defaultSelected) return true;
    }
    return false;
  }

  function patch(fresh) {
    const heading = list.querySelector("#pending-count");
    heading.textContent = fresh.querySelector("#pending-count").textContent;
    document.title = heading.textContent + " - Airlock";
    const oldEmpty = list.querySelector(".empty");
    const newEmpty = fresh.querySelector(".empty");
    if (oldEmpty) oldEmpty.remove();
    if (newEmpty) heading.after(newEmpty);
    const cards = list.querySelector(".cards");
    const wanted = new Map();
    for (const card of fresh.querySelectorAll(".request")) wanted.set(card.id, card);
    for (const card of Array.from(cards.querySelectorAll(".request"))) {
      if (!wanted.has(card.id)) card.remove();
    }
    let previous = null;
    for (const [id, card] of wanted) {
      const current = document.getElementById(id);
      let placed = current;
      if (!current) {
        placed = document.adoptNode(card);
      } else if (!edited(current)) {
        placed = document.adoptNode(card);
        current.replaceWith(placed);
      }
      if (previous ? previous.nextElementSibling !== placed : cards.firstElementChild !== placed) {
        if (previous) previous.after(placed); else cards.prepend(placed);
      }
      previous = placed;
    }
  }

  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      do {
        again = false;
        const response = await fetch(list.dataset.live, { credentials: "same-origin" });
        if (response.status === 401) { window.location.reload(); return; }
        if (!response.ok) continue;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("pending");
        if (fresh) patch(fresh);
      } while (again);
    } catch (error) {
      // The gateway may be restarting: the event stream reconnects and refreshes again.
    } finally {
      fetching = false;
    }
  }

  const events = new EventSource(list.dataset.events);
  events.addEventListener("change", refresh);
  events.addEventListener("open", refresh);  // catch up on what changed while away
  events.addEventListener("signed-out", function () {
    events.close();
    window.location.reload();
  });
})();
