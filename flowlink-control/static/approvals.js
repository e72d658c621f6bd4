// FlowLink approvals: the live queue, the open request and the countdowns. No inline script anywhere (the pages'
// CSP is script-src 'self'); without JavaScript the pages work and a reload shows the queue.
//
// The queue page (#approvals) listens to /ui/events/approvals (server-sent events):
//   ready, resync  -> re-read the queue from the page itself (nothing missed in between);
//   approval       -> a `filed` request gets a row, any other kind removes its row;
//   end            -> the session ended: stop and say so (the server stopping: reload shortly).
// The title carries the count, e.g. "(2) Approvals · FlowLink"; a sound on arrival is optional
// and remembered in localStorage.
(function () {
  'use strict';

  function riskWords(risk) {
    if (risk <= 0) { return 'none'; }
    if (risk < 30) { return 'low'; }
    if (risk < 60) { return 'medium'; }
    if (risk < 85) { return 'high'; }
    return 'critical';
  }

  function two(n) { return (n < 10 ? '0' : '') + n; }

  // The same words as the server's time_left().
  function timeLeft(expiresMs) {
    var secs = Math.floor((expiresMs - Date.now()) / 1000);
    if (secs <= 0) { return 'due'; }
    var d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24,
        m = Math.floor(secs / 60) % 60, s = secs % 60;
    if (d > 0) { return d + ' d ' + h + ' h'; }
    if (h > 0) { return h + ' h ' + two(m) + ' min'; }
    if (m > 0) { return m + ' min ' + two(s) + ' s'; }
    return s + ' s';
  }

  function tick() {
    var els = document.querySelectorAll('.countdown[data-expires]');
    for (var i = 0; i < els.length; i++) {
      var text = timeLeft(Number(els[i].getAttribute('data-expires')));
      if (els[i].textContent !== text) { els[i].textContent = text; }
    }
  }

  function start() {
    tick();
    window.setInterval(tick, 1000);
    if (typeof window.EventSource !== 'function') { return; }
    var root = document.getElementById('approvals');
    if (root) { live(root); }
    var request = document.getElementById('request-live');
    if (request && request.getAttribute('data-events')) { watchRequest(request); }
  }

  // The request page: when someone else concludes it (or the proxy withdraws it, or it times
  // out) while it is open, say so and take the decision form away.
  function watchRequest(el) {
    var id = el.getAttribute('data-id');
    var source = new window.EventSource(el.getAttribute('data-events'));
    var words = { approved: 'approved', denied: 'denied', cancelled: 'withdrawn by the proxy', timed_out: 'timed out' };
    source.addEventListener('approval', function (e) {
      var ev;
      try { ev = JSON.parse(e.data); } catch (err) { return; }
      if (ev.id !== id || ev.kind === 'filed') { return; }
      source.close();
      var note = document.getElementById('decided-meanwhile');
      note.textContent = 'This request was ' + (words[ev.status] || ev.status) + ' meanwhile. Reload the page to see who decided.';
      note.hidden = false;
      var decide = document.getElementById('decide');
      if (decide) { decide.hidden = true; }
    });
    source.addEventListener('end', function () { source.close(); });
  }

  function live(root) {
    var org = root.getAttribute('data-org');
    var base = root.getAttribute('data-base') || '';
    var canDecide = root.getAttribute('data-can-decide') === 'true';
    var rows = document.getElementById('queue-rows');
    var empty = document.getElementById('queue-empty');
    var count = document.getElementById('queue-count');
    var status = document.getElementById('live-status');
    var soundOption = document.getElementById('sound-option');
    var soundToggle = document.getElementById('sound-toggle');
    var key = 'flowlink.approvals.sound';
    var audio = null;

    try { soundToggle.checked = window.localStorage.getItem(key) === '1'; } catch (e) { /* private mode */ }
    soundOption.hidden = false;
    soundToggle.addEventListener('change', function () {
      try { window.localStorage.setItem(key, soundToggle.checked ? '1' : '0'); } catch (e) { /* ignore */ }
      if (soundToggle.checked) { beep(0.0001); }
    });

    function beep(volume) {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) { return; }
      try {
        audio = audio || new Ctx();
        var osc = audio.createOscillator(), gain = audio.createGain();
        osc.frequency.value = 880;
        gain.gain.value = volume;
        osc.connect(gain);
        gain.connect(audio.destination);
        osc.start();
        osc.stop(audio.currentTime + 0.15);
      } catch (e) { /* no sound, no harm */ }
    }

    function setStatus(text) {
      status.hidden = false;
      status.textContent = text;
    }

    function refreshCount() {
      var n = rows.querySelectorAll('tr[data-id]').length;
      count.textContent = n + ' waiting';
      empty.hidden = n > 0;
      document.title = (n > 0 ? '(' + n + ') ' : '') + 'Approvals · FlowLink';
    }

    function cell(tr, text, kind) {
      var td = document.createElement('td');
      if (kind) {
        var inner = document.createElement(kind);
        inner.textContent = text;
        td.appendChild(inner);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
      return td;
    }

    function rowFor(ev) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-id', ev.id);
      tr.className = 'arrived';
      cell(tr, ev.requester);
      cell(tr, ev.device);
      cell(tr, ev.agent);
      cell(tr, ev.service);
      cell(tr, ev.tool, 'code');
      var words = riskWords(ev.risk);
      var risk = cell(tr, ev.risk + ' · ' + words, 'span');
      risk.firstChild.className = 'tag risk-' + words;
      var left = cell(tr, timeLeft(ev.expires_ms), 'span');
      left.firstChild.className = 'countdown';
      left.firstChild.setAttribute('data-expires', String(ev.expires_ms));
      var td = document.createElement('td');
      var a = document.createElement('a');
      a.className = 'review';
      a.href = base + '/ui/orgs/' + encodeURIComponent(org) + '/approvals/' + encodeURIComponent(ev.id);
      a.textContent = canDecide ? 'Review' : 'View';
      td.appendChild(a);
      tr.appendChild(td);
      return tr;
    }

    function find(id) {
      var all = rows.querySelectorAll('tr[data-id]');
      for (var i = 0; i < all.length; i++) {
        if (all[i].getAttribute('data-id') === id) { return all[i]; }
      }
      return null;
    }

    function expiresOf(tr) {
      var c = tr.querySelector('.countdown[data-expires]');
      return c ? Number(c.getAttribute('data-expires')) : 0;
    }

    function onApproval(ev) {
      var existing = find(ev.id);
      if (ev.kind === 'filed') {
        if (existing) { return; }
        var tr = rowFor(ev);
        // Soonest to time out first, as the server orders them.
        var all = rows.querySelectorAll('tr[data-id]'), before = null;
        for (var i = 0; i < all.length; i++) {
          if (expiresOf(all[i]) > ev.expires_ms) { before = all[i]; break; }
        }
        rows.insertBefore(tr, before);
        if (soundToggle.checked) { beep(0.2); }
      } else if (existing) {
        existing.parentNode.removeChild(existing);
      }
      refreshCount();
    }

    // Re-reads the queue from the page itself: the server's rows replace ours.
    function resync() {
      return window.fetch(window.location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
        .then(function (resp) {
          if (!resp.ok || resp.redirected) { throw new Error('status ' + resp.status); }
          return resp.text();
        })
        .then(function (html) {
          var doc = new window.DOMParser().parseFromString(html, 'text/html');
          var fresh = doc.getElementById('queue-rows');
          if (!fresh) { return; }
          while (rows.firstChild) { rows.removeChild(rows.firstChild); }
          while (fresh.firstChild) { rows.appendChild(document.adoptNode(fresh.firstChild)); }
          tick();
          refreshCount();
          setStatus('live');
        })
        .catch(function () { setStatus('reload to update'); });
    }

    function connect() {
      var source = new window.EventSource(root.getAttribute('data-events'));
      // `live` once the rows are re-read: from then on every change arrives as an event.
      source.addEventListener('ready', function () { setStatus('syncing…'); resync(); });
      source.addEventListener('resync', resync);
      source.addEventListener('approval', function (e) {
        var ev;
        try { ev = JSON.parse(e.data); } catch (err) { return; }
        onApproval(ev);
      });
      source.addEventListener('end', function (e) {
        source.close();
        if (e.data === 'server_stopping') {
          // Another replica, or this one once it is back: connect again after a pause.
          setStatus('reconnecting…');
          window.setTimeout(connect, 2000 + Math.random() * 3000);
        } else {
          setStatus('signed out: reload to sign in again');
        }
      });
      source.onerror = function () {
        setStatus(source.readyState === window.EventSource.CLOSED ? 'offline: reload to update' : 'reconnecting…');
      };
    }
    connect();
    refreshCount();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
}());
