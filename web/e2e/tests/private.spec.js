import { test, expect, uniqueTopic } from '../support/fixtures.js';
import { mintToken, publish } from '../support/mercure.js';

/** Opens the console in a fresh browser context (own cookies) and subscribes to `topic`. */
async function subscribedConsole(browser, hub, topic, { token, transport } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${hub.url}/console`);
  const form = page.locator('#subscribe-form');
  await form.getByLabel('Topic selectors').fill(topic);
  if (token) {
    await form.getByLabel('Subscriber token').fill(token);
    await form.locator(`input[name="transport"][value="${transport}"]`).check();
  }
  await form.getByRole('button', { name: 'Subscribe', exact: true }).click();
  await expect(page.locator('#state')).toHaveText('OPEN');
  return { context, page, received: () => page.locator('#events tr[data-type] td.data').allTextContents() };
}

test('private updates reach a page whose token allows them, and not an anonymous page', async ({ browser, hub }) => {
  const topic = uniqueTopic('private');
  const token = mintToken({ subscribe: [topic] });
  const viaCookie = await subscribedConsole(browser, hub, topic, { token, transport: 'cookie' });
  const viaQuery = await subscribedConsole(browser, hub, topic, { token, transport: 'query' });
  const anonymous = await subscribedConsole(browser, hub, topic);
  const otherTopicToken = await subscribedConsole(browser, hub, topic, {
    token: mintToken({ subscribe: [`${topic}/elsewhere`] }),
    transport: 'cookie',
  });
  try {
    // The cookie page sent its token as the mercureAuthorization cookie, not in the URL.
    const cookies = await viaCookie.context.cookies(`${hub.url}/.well-known/mercure`);
    expect(cookies.find((cookie) => cookie.name === 'mercureAuthorization')?.value).toBe(token);
    await expect(viaCookie.page.locator('#subscription-url')).not.toContainText('authorization=');
    await expect(viaQuery.page.locator('#subscription-url')).toContainText('authorization=…');

    await publish(hub.url, { topic, data: 'secret', private: true });
    await publish(hub.url, { topic, data: 'public' });

    // Newest first in the console.
    for (const allowed of [viaCookie, viaQuery]) {
      await expect.poll(allowed.received).toEqual(['public', 'secret']);
    }
    // Updates of a topic arrive in order: once "public" is in, "secret" was skipped, not late.
    for (const refused of [anonymous, otherTopicToken]) {
      await expect.poll(refused.received).toEqual(['public']);
    }
  } finally {
    for (const { context } of [viaCookie, viaQuery, anonymous, otherTopicToken]) await context.close();
  }
});
