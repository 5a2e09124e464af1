// The filter box: hide the rows, cards and sidebar links whose text does not contain every word typed.
(function () {
  "use strict";
  var box = document.getElementById("filter");
  var note = document.getElementById("filter-note");
  if (!box) { return; }
  function matches(el, words) {
    var text = (el.getAttribute("data-filter") || el.textContent).toLowerCase();
    return words.every(function (w) { return text.indexOf(w) !== -1; });
  }
  function apply() {
    var words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    document.querySelectorAll("[data-group]").forEach(function (group) {
      var own = matches(group, words);
      var rows = group.querySelectorAll("[data-row]");
      var any = false;
      rows.forEach(function (row) {
        var hit = !words.length || own || matches(row, words);
        row.classList.toggle("hidden", !hit);
        if (hit) { any = true; shown += 1; }
      });
      var visible = !words.length || own || any;
      group.classList.toggle("hidden", !visible);
      var link = document.querySelector('nav a[href="#' + group.id + '"]');
      if (link) { link.parentElement.classList.toggle("hidden", !visible); }
    });
    note.textContent = words.length ? shown + " matching rows" : "";
  }
  box.addEventListener("input", apply);
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== box) { e.preventDefault(); box.focus(); }
    if (e.key === "Escape" && document.activeElement === box) { box.value = ""; apply(); }
  });
})();
