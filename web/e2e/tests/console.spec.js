import { test, expect, screenshot, uniqueTopic } from '../support/fixtures.js';
import { startHub } from '../support/hub.js';
import { publisherToken } from '../support/mercure.js';

test('the live console publishes and sees its own update', async ({ page, hub }) => {
  const topic = uniqueTopic('console');
  await page.goto(`${hub.url}/console`);
  await expect(page.locator('#hub-url')).toHaveText(`${hub.url}/.well-known/mercure`);

  const subscribe = page.locator('#subscribe-form');
  await subscribe.getByLabel('Topic selectors').fill(`${topic}\n/demo/ping`);
  await subscribe.getByLabel('Event types').fill('ping, greeting');
  await subscribe.getByRole('button', { name: 'Subscribe', exact: true }).click();
  await expect(page.locator('#state')).toHaveText('OPEN');

  const form = page.locator('#publish-form');
  await form.getByLabel('Topics').fill(topic);
  await form.getByLabel('Data').fill('{"hello": "from the console"}');
  await form.getByLabel('Type').fill('greeting');
  await form.getByLabel('Publisher token').fill(publisherToken());
  await form.getByRole('button', { name: 'Publish' }).click();

  const result = page.locator('#publish-result');
  await expect(result).toHaveAttribute('data-ok', 'true');
  const id = await result.getAttribute('data-id');
  expect(id).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);

  const row = page.locator(`#events tr[data-id="${id}"]`);
  await expect(row).toHaveCount(1);
  await expect(row.locator('td.data')).toHaveText('{"hello": "from the console"}');
  await expect(row).toHaveAttribute('data-type', 'greeting');
  await expect(page.locator('#last-id')).not.toHaveText('–');

  // A refused publish says why.
  await form.getByLabel('Publisher token').fill('');
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(result).toHaveAttribute('data-ok', 'false');
  await expect(result).toContainText(/40[13]/);

  // Something to look at for the README: a few pings around our update.
  await form.getByLabel('Publisher token').fill(publisherToken());
  await form.getByLabel('Data').fill('{"hello": "again", "n": 2}');
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(result).toHaveAttribute('data-ok', 'true');
  await expect.poll(() => page.locator('#events tr[data-type="ping"]').count()).toBeGreaterThanOrEqual(3);
  await screenshot(page, 'console', { fullPage: true });
});

test('event data, types and ids are shown as text, never as markup', async ({ page, hub }) => {
  const topic = uniqueTopic('markup');
  await page.goto(`${hub.url}/console`);
  const subscribe = page.locator('#subscribe-form');
  await subscribe.getByLabel('Topic selectors').fill(topic);
  await subscribe.getByLabel('Event types').fill('<b>bold</b>');
  await subscribe.getByRole('button', { name: 'Subscribe', exact: true }).click();
  await expect(page.locator('#state')).toHaveText('OPEN');

  const hostile = '<img src="x" onerror="window.injected = true"><script>window.injected = true</script>';
  const form = page.locator('#publish-form');
  await form.getByLabel('Topics').fill(topic);
  await form.getByLabel('Data').fill(hostile);
  await form.getByLabel('Type').fill('<b>bold</b>');
  await form.getByLabel('ID').fill('<i>id</i>');
  await form.getByLabel('Publisher token').fill(publisherToken());
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(page.locator('#publish-result')).toHaveAttribute('data-ok', 'true');

  const row = page.locator('#events tr[data-type]');
  await expect(row).toHaveCount(1);
  await expect(row.locator('td.data')).toHaveText(hostile);
  await expect(row).toHaveAttribute('data-type', '<b>bold</b>');
  await expect(row.locator('td.id')).toHaveText('<i>id</i>');
  await expect(page.locator('#events img, #events script, #events b, #events i')).toHaveCount(0);
  expect(await page.evaluate(() => window.injected)).toBeUndefined();
});

test('a refused subscription shows the hub\'s status and reason', async ({ page }) => {
  const hub = await startHub({ demo: false, args: ['--no-anonymous'], name: 'no-anonymous' });
  try {
    await page.goto(`${hub.url}/console`);
    await page.locator('#subscribe-form').getByRole('button', { name: 'Subscribe', exact: true }).click();
    await expect(page.locator('#state')).toHaveText('CLOSED');
    await expect(page.locator('#subscription-problem')).toContainText('The hub answered 401');
  } finally {
    await hub.stop();
  }
});
