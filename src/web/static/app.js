// meetingd's web view: the one script of its pages (served by the daemon;
// the Content-Security-Policy allows no other). It listens to the
// server-sent events of the page's data-live element and puts in what the
// daemon drew: it never polls, and everything it inserts was escaped by
// the daemon when drawn.
(function () {
  'use strict';

  function status(text, on) {
    var shown = document.getElementById('live-status');
    if (shown) {
      shown.textContent = text;
      shown.className = 'live-status ' + (on ? 'on' : 'off');
    }
  }

  function replace(id, drawn) {
    var box = document.getElementById(id);
    if (box && typeof drawn === 'string') {
      box.innerHTML = drawn;
    }
  }

  // Rows after the last one shown, on a table that shows the last page.
  function append(id, rows) {
    var table = document.getElementById(id);
    if (!table || table.getAttribute('data-tail') !== 'true' || !rows || !rows.length) {
      return;
    }
    var body = table.tBodies[0];
    var shown = {};
    for (var i = 0; i < body.rows.length; i++) {
      shown[body.rows[i].getAttribute('data-id')] = true;
    }
    var parse = document.createElement('tbody');
    rows.forEach(function (drawn) {
      parse.innerHTML = drawn;
      var row = parse.firstElementChild;
      if (row && !shown[row.getAttribute('data-id')]) {
        body.appendChild(row);
      }
    });
    var none = table.parentNode.querySelector('p.none');
    if (none) {
      none.remove();
    }
  }

  function listen(url, update) {
    var source = new EventSource(url);
    source.addEventListener('open', function () {
      status('● live', true);
    });
    source.addEventListener('error', function () {
      status('reconnecting…', false);
    });
    source.addEventListener('update', function (event) {
      update(JSON.parse(event.data), source);
    });
  }

  var active = document.getElementById('active');
  if (active && active.getAttribute('data-live')) {
    listen(active.getAttribute('data-live'), function (data) {
      replace('active', data.html);
    });
  }

  var instance = document.getElementById('instance');
  if (instance && instance.getAttribute('data-live')) {
    listen(instance.getAttribute('data-live'), function (data, source) {
      replace('facts-box', data.facts);
      replace('participants', data.participants);
      replace('timeline', data.timeline);
      append('events', data.events);
      append('chat', data.chat);
      if (data.ended) {
        source.close();
        status('ended', false);
      }
    });
  }
})();
