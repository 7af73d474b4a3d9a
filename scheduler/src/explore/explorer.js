// kubecensus explorer: keys for the server-rendered page (it works without this script).
// "/" focuses the filter bar; "j"/"k" move through the table's rows and Enter opens one;
// "n"/"p" go to the next or previous page. Keys typed into a field are left alone.
(function () {
  "use strict";
  var rows = function () { return Array.prototype.slice.call(document.querySelectorAll("#objects tbody tr")); };
  var current = -1;
  var focusRow = function (at) {
    var all = rows();
    if (all.length === 0) { return; }
    current = Math.max(0, Math.min(all.length - 1, at));
    var link = all[current].querySelector("a");
    if (link) { link.focus(); }
  };
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) { return; }
    var go = function (id) { var link = document.getElementById(id); if (link) { link.click(); } };
    switch (event.key) {
      case "/": event.preventDefault(); document.querySelector("#filters input").focus(); break;
      case "j": focusRow(current + 1); break;
      case "k": focusRow(current - 1); break;
      case "n": go("next"); break;
      case "p": go("prev"); break;
      default: return;
    }
  });
}());
