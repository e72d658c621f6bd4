// FlowLink audit pages: one button that opens or closes every event's details at once. Without
// JavaScript each event's <details> opens on its own and the button stays hidden.
(function () {
  'use strict';
  var line = document.getElementById('toggle-all-line');
  var button = document.getElementById('toggle-all');
  var table = document.getElementById('events');
  if (!line || !button || !table) { return; }
  var all = table.querySelectorAll('details');
  function anyClosed() {
    for (var i = 0; i < all.length; i++) { if (!all[i].open) { return true; } }
    return false;
  }
  function label() {
    button.textContent = anyClosed() ? 'Show all details' : 'Hide all details';
    button.setAttribute('aria-expanded', anyClosed() ? 'false' : 'true');
  }
  button.addEventListener('click', function () {
    var open = anyClosed();
    for (var i = 0; i < all.length; i++) { all[i].open = open; }
    label();
  });
  table.addEventListener('toggle', label, true);
  line.hidden = false;
  label();
}());
