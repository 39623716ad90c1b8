// Marks the current page in the table of contents and shows the documented
// version, which it reads from data.json at the site root.
(function () {
  'use strict';

  // document.currentScript is only set while this file runs, so keep it for
  // the data.json URL below.
  var script = document.currentScript;

  var links = document.querySelectorAll('.toc a');
  for (var i = 0; i < links.length; i++) {
    if (links[i].href === window.location.href) {
      links[i].setAttribute('aria-current', 'page');
    }
  }

  var label = document.getElementById('version');
  if (!label || !script || !window.fetch) {
    return;
  }
  fetch(new URL('../data.json', script.src).href)
    .then(function (response) {
      if (!response.ok) {
        throw new Error('data.json returned HTTP ' + response.status);
      }
      return response.json();
    })
    .then(function (data) {
      label.textContent = data.product + ' ' + data.version;
    })
    .catch(function (error) {
      // The version label is decorative, so the page stays usable without it.
      console.warn('Acme Docs: version label not loaded:', error);
    });
}());
