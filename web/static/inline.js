// Progressive enhancement, no build step: a form with class "inline-js" is sent in the background;
// on success the row it sits in (data-remove="tr") is removed, or the answer is shown in place.
// Without JavaScript the same form posts and the page reloads with the same message.
(function () {
  "use strict";
  function show(text, ok) {
    var main = document.querySelector("main");
    if (!main) { return; }
    var old = main.querySelector("p.flash");
    if (old) { old.remove(); }
    var p = document.createElement("p");
    p.className = "flash " + (ok ? "ok" : "error");
    p.textContent = text;  // text, never markup
    main.insertBefore(p, main.firstChild);
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("inline-js") || !window.fetch) { return; }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
    event.preventDefault();
    var data = new FormData(form);
    var submitter = event.submitter;
    if (submitter && submitter.name) { data.append(submitter.name, submitter.value); }
    // the page's own post, as without JavaScript: with the button pressed (form.submit() alone sends no button,
    // so "Block all of <domain>" would block only the address)
    function post() {
      if (submitter && submitter.name) {
        var pressed = document.createElement("input");
        pressed.type = "hidden"; pressed.name = submitter.name; pressed.value = submitter.value;
        form.appendChild(pressed);
      }
      form.submit();
    }
    // getAttribute: a field named "action" hides the form's action property
    fetch(form.getAttribute("action") || window.location.href, {
      method: "POST", body: new URLSearchParams(data), credentials: "same-origin",
      headers: {"X-Requested-With": "fetch", "Accept": "application/json"}
    }).then(function (response) {
      if (response.redirected || (response.headers.get("Content-Type") || "").indexOf("json") < 0) {
        post();  // e.g. the session ended: let the page do what it does without JavaScript
        return null;
      }
      return response.json().then(function (body) {
        show(body.message || "", body.ok);
        if (body.ok && form.dataset.remove) {
          var row = form.closest(form.dataset.remove);
          if (row) { row.remove(); }
        }
      });
    }).catch(post);
  });
})();
