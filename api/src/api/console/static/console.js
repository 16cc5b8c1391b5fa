// Hemicycle console: the only script. Forms that change something serious carry a
// data-confirm question; the change goes only once the admin confirms it.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
