// The live page of one event (GET /events/{eventId}): its status stream and,
// for a user typed in the box, that user's standing stream, as the browser's
// EventSource reads them (docs/api.md, "Streams"). No build step: served as is.
(() => {
  "use strict";

  const byId = (id) => document.getElementById(id);
  const parts = location.pathname.split("/");
  const eventId = decodeURIComponent(parts[parts.length - 1]);
  const api = "/api/events/" + encodeURIComponent(eventId);
  byId("event-id").textContent = eventId;
  document.title = "Event " + eventId + ", live";

  // Follows a stream. The browser reconnects by itself after a network
  // error (a server restart); an answer other than 200 closes the source
  // for good, so `closed` decides whether to try again. Nothing is shown
  // once the follow was stopped (another user is watched).
  function follow(url, name, show, state, closed) {
    let source = null;
    let timer = null;
    let stopped = false;
    const open = () => {
      source = new EventSource(url);
      source.addEventListener(name, (message) => show(JSON.parse(message.data)));
      source.onopen = () => state("live");
      source.onerror = () => {
        if (source.readyState !== EventSource.CLOSED) {
          state("reconnecting");
          return;
        }
        state("closed");
        closed(() => stopped).then((again) => {
          if (again && !stopped) timer = setTimeout(open, 1000);
        });
      };
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(timer);
      source.close();
    };
  }

  // Why a stream was refused, from the error body of the plain read it
  // follows (`url`): `null` if the server could not be reached either.
  async function refusal(url) {
    try {
      const answer = await fetch(url);
      if (answer.ok) return { code: "ok" };
      const body = await answer.json();
      const said = body.details ? body.error + ": " + body.details : body.error;
      return { code: body.code, said: said };
    } catch (_) {
      return null;
    }
  }

  // Tickets booked per second over the last minute: the rises of
  // `bookedTickets` between statuses, counted in the second they arrived;
  // only whole seconds are shown. A new connection starts counting afresh:
  // what was booked while disconnected is not one second's bookings.
  const SECONDS = 60;
  const perSecond = new Map();
  let lastBooked = null;
  let chart = null;

  function countBookings(booked) {
    if (lastBooked !== null && booked > lastBooked) {
      const second = Math.floor(Date.now() / 1000);
      perSecond.set(second, (perSecond.get(second) || 0) + booked - lastBooked);
    }
    lastBooked = booked;
  }

  function drawRate() {
    // The last whole second.
    const now = Math.floor(Date.now() / 1000) - 1;
    const xs = [];
    const ys = [];
    for (let second = now - SECONDS + 1; second <= now; second++) {
      xs.push(second);
      ys.push(perSecond.get(second) || 0);
    }
    for (const second of perSecond.keys()) {
      if (second <= now - SECONDS) perSecond.delete(second);
    }
    byId("rate").textContent = "Now " + ys[ys.length - 1] + " a second; at most " +
      Math.max(...ys) + " a second in the last minute.";
    if (!window.uPlot) return;
    const width = byId("chart").clientWidth;
    if (chart === null) {
      chart = new uPlot({
        width: width,
        height: 150,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(5, max)] } },
        series: [{}, {
          label: "tickets booked a second",
          stroke: "#111",
          fill: "#111",
          points: { show: false },
          paths: uPlot.paths.bars({ size: [0.8, 20] }),
        }],
      }, [xs, ys], byId("chart"));
    } else {
      if (chart.width !== width) chart.setSize({ width: width, height: 150 });
      chart.setData([xs, ys]);
    }
  }

  function showStatus(status) {
    const total = status.totalTickets;
    const figures = {
      booked: status.bookedTickets,
      held: status.heldTickets,
      available: status.availableTickets,
      total: total,
      waiting: status.waitingListCount,
    };
    for (const [id, value] of Object.entries(figures)) byId(id).textContent = value;
    byId("sales").textContent = status.salesOpen ? "open" : "closed";
    const share = (n) => (total > 0 ? (100 * n) / total : 0) + "%";
    byId("bar-booked").style.width = share(status.bookedTickets);
    byId("bar-held").style.width = share(status.heldTickets);
    byId("bar").setAttribute("aria-label", status.bookedTickets + " booked, " +
      status.heldTickets + " held, " + status.availableTickets + " available of " + total);
    countBookings(status.bookedTickets);
  }

  const connection = {
    live: "Live: figures change as bookings are committed.",
    reconnecting: "Connection lost: reconnecting…",
    closed: "Not connected.",
  };
  follow(api + "/stream", "status", showStatus,
    (state) => {
      if (state === "live") lastBooked = null;
      byId("connection").textContent = connection[state];
    },
    async () => {
      const why = await refusal(api);
      const final = {
        event_not_found: "No event " + eventId + " here.",
        unauthorized: "This server asks for an API key: the page cannot send one.",
        forbidden: "This server asks for an API key: the page cannot send one.",
        invalid_input: why && why.said,
      };
      if (why && why.code in final) {
        // Nothing to show: no figures that look live.
        for (const id of ["figures", "rates", "users"]) byId(id).hidden = true;
        byId("connection").textContent = final[why.code];
        return false;
      }
      return true;
    });
  drawRate();
  setInterval(drawRate, 1000);

  // A user's standing, in words.
  function describe(standing) {
    switch (standing.status) {
      case "booked": return standing.userId + " has a ticket.";
      case "waiting": return standing.userId + " is waiting: position " + standing.position + " in the queue.";
      case "held": return standing.userId + (standing.offered ? " is offered a ticket" : " holds a ticket") +
        " until " + new Date(standing.expiresAt).toLocaleTimeString() + ".";
      case "cancelled": return standing.userId + " cancelled: no ticket, hold or place.";
      case "expired": return standing.userId + "'s hold expired at " +
        new Date(standing.expiredAt).toLocaleTimeString() + ".";
      default: return standing.userId + ": " + standing.status;
    }
  }

  let unwatch = null;
  byId("watch").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const user = byId("user").value;
    if (unwatch) unwatch();
    const url = api + "/bookings/" + encodeURIComponent(user);
    byId("standing").textContent = "Looking for " + user + "…";
    unwatch = follow(url + "/stream", "standing",
      (standing) => { byId("standing").textContent = describe(standing); },
      () => {},
      async (stopped) => {
        const why = await refusal(url);
        if (stopped()) return false;
        if (why && why.code === "booking_not_found") {
          // Looked for again each second: the user may book meanwhile.
          byId("standing").textContent = user + " has no booking at this event.";
        } else if (why && why.code !== "ok") {
          byId("standing").textContent = why.said || why.code;
          const final = ["invalid_input", "event_not_found", "unauthorized", "forbidden"];
          return !final.includes(why.code);
        }
        return true;
      });
  });
})();
