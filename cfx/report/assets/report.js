// cfx report: filter the Browse grid and show a row's metadata. No network, no libraries; text only via
// textContent (names from the data are never parsed as HTML).
(function () {
  "use strict";
  var rows = JSON.parse(document.getElementById("browse-data").textContent);
  var cards = Array.prototype.slice.call(document.querySelectorAll("#grid .card"));
  var selects = Array.prototype.slice.call(document.querySelectorAll("#filters select"));
  var count = document.getElementById("visible-count");
  var detail = document.getElementById("detail");

  function applyFilters() {
    var wanted = {};
    selects.forEach(function (s) { if (s.value !== "") { wanted[s.getAttribute("data-filter")] = s.value; } });
    var visible = 0;
    cards.forEach(function (card) {
      var row = rows[Number(card.getAttribute("data-i"))];
      var show = Object.keys(wanted).every(function (k) { return String(row[k]) === wanted[k]; });
      card.hidden = !show;
      if (show) { visible += 1; }
    });
    count.textContent = String(visible);
  }

  function showDetail(i) {
    var row = rows[i];
    document.getElementById("detail-title").textContent = row.generator + " — " + row.fields.shard + ":" + row.fields.row;
    var img = document.getElementById("detail-img");
    if (row.thumb) { img.src = "thumbs/" + row.thumb; img.hidden = false; } else { img.hidden = true; }
    var table = document.getElementById("detail-fields");
    while (table.firstChild) { table.removeChild(table.firstChild); }
    Object.keys(row.fields).forEach(function (k) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      var td = document.createElement("td");
      th.textContent = k;
      var v = row.fields[k];
      td.textContent = (v !== null && typeof v === "object") ? JSON.stringify(v) : String(v);
      td.setAttribute("data-field", k);
      tr.appendChild(th);
      tr.appendChild(td);
      table.appendChild(tr);
    });
    detail.hidden = false;
    detail.setAttribute("data-i", String(i));
  }

  selects.forEach(function (s) { s.addEventListener("change", applyFilters); });
  cards.forEach(function (card) {
    var open = function () { showDetail(Number(card.getAttribute("data-i"))); };
    card.addEventListener("click", open);
    card.addEventListener("keydown", function (e) { if (e.key === "Enter") { open(); } });
  });
  document.getElementById("detail-close").addEventListener("click", function () { detail.hidden = true; });
  applyFilters();
})();
