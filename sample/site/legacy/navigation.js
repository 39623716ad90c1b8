// Client-side page changes in the way the default theme of legacy GitBook
// (GitbookIO/theme-default, src/js/theme/navigation.js) makes them. A click
// on a link marked data-nav fetches the target page's HTML with
// XMLHttpRequest, a GET whose response is text/html. The script then adds
// the URL to the history with history.pushState, sets document.title and
// replaces the content of <main id="content">. The page is not loaded in
// full.
//
// For browser tests, <main id="content"> takes the target's data-page value,
// and <html> counts the page changes in data-client-navigations.
(function () {
  'use strict';

  var navigations = 0;

  // Parse html and return its title and <main id="content">, or null when
  // it has no such element.
  function parsePage(html) {
    var page = new DOMParser().parseFromString(html, 'text/html');
    var content = page.getElementById('content');
    if (!content) {
      return null;
    }
    return { title: page.title, content: content };
  }

  function showPage(page) {
    var target = document.getElementById('content');
    target.innerHTML = page.content.innerHTML;
    target.setAttribute('data-page', page.content.getAttribute('data-page') || '');
    document.title = page.title;

    navigations++;
    document.documentElement.setAttribute('data-client-navigations', String(navigations));
    window.scrollTo(0, 0);
  }

  // Fetch url and show it. Like the legacy GitBook theme, a failed request
  // only logs to the console and leaves the current page as it is.
  function navigate(url, addToHistory) {
    var request = new XMLHttpRequest();
    request.open('GET', url);
    request.setRequestHeader('Accept', 'text/html');
    // jQuery's $.ajax, which the legacy GitBook theme uses for this request,
    // sends this header on same-origin requests.
    request.setRequestHeader('X-Requested-With', 'XMLHttpRequest');

    request.onload = function () {
      var page = request.status === 200 ? parsePage(request.responseText) : null;
      if (!page) {
        console.error('Page change to ' + url + ' failed: HTTP ' + request.status);
        return;
      }
      if (addToHistory) {
        window.history.pushState({ path: url }, '', url);
      }
      showPage(page);
    };
    request.onerror = function () {
      console.error('Page change to ' + url + ' failed: network error');
    };
    request.send();
  }

  // Record the first page so that the back button can return to it.
  window.history.replaceState({ path: window.location.href }, '');

  document.addEventListener('click', function (event) {
    // Clicks that open a new tab or window stay with the browser.
    if (event.defaultPrevented || event.button !== 0 ||
        event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    var link = event.target.closest('a[data-nav]');
    if (!link) {
      return;
    }
    event.preventDefault();
    navigate(link.href, true);
  });

  // The back and forward buttons show the page of the history entry.
  window.addEventListener('popstate', function (event) {
    if (event.state && event.state.path) {
      navigate(event.state.path, false);
    }
  });
}());
