// The policy editor's progressive enhancement: line numbers beside the textarea, kept in step
// with its scrolling, and the caret's line and column (the positions errors are reported at).
// Without JavaScript the form works the same; errors are listed with their line on the page.
(function () {
  "use strict";
  function enhance(textarea) {
    var wrap = textarea.parentNode;
    if (!wrap || !wrap.classList.contains("editor")) {
      return;
    }
    var gutter = document.createElement("pre");
    gutter.className = "gutter";
    gutter.setAttribute("aria-hidden", "true");
    wrap.insertBefore(gutter, textarea);
    var caret = document.getElementById("caret");
    var shown = 0;

    function lines() {
      var n = textarea.value.split("\n").length;
      if (n !== shown) {
        var out = [];
        for (var i = 1; i <= n; i++) {
          out.push(String(i));
        }
        gutter.textContent = out.join("\n");
        shown = n;
      }
      gutter.scrollTop = textarea.scrollTop;
    }

    function position() {
      if (!caret) {
        return;
      }
      var before = textarea.value.slice(0, textarea.selectionStart).split("\n");
      caret.textContent = "Line " + before.length + ", column " + (before[before.length - 1].length + 1);
      caret.hidden = false;
    }

    textarea.addEventListener("input", function () { lines(); position(); });
    textarea.addEventListener("scroll", lines);
    textarea.addEventListener("keyup", position);
    textarea.addEventListener("click", position);
    lines();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var textarea = document.querySelector(".editor textarea");
    if (textarea) {
      enhance(textarea);
    }
  });
})();
