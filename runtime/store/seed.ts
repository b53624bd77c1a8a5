/**
 * Demo platform data for local runs, scenarios and tests: three customers, merchants and
 * riders in Shanghai and eight orders timed relative to `now`. Names, addresses and phone
 * numbers are made up.
 */
import { count } from 'drizzle-orm';
import { runInTransaction, type Db } from './db.ts';
import {
  customers,
  merchants,
  orderStatusHistory,
  orders,
  riders,
  type Customer,
  type Merchant,
  type OrderItem,
  type OrderStatus,
  type Rider,
} from './schema.ts';

const minuteMs = 60_000;
// Order ids carry the order's date in China Standard Time, which has no daylight saving.
const chinaStandardTimeOffsetMs = 8 * 60 * minuteMs;

const demoCustomers: Customer[] = [
  { id: 'C001', name: '李晓明', phone: '13812345678', address: '上海市徐汇区漕溪北路88号2号楼1203室' },
  { id: 'C002', name: '王芳', phone: '13923456781', address: '上海市静安区南京西路1266号5楼502室' },
  { id: 'C003', name: '陈志强', phone: '13734567812', address: '上海市浦东新区张杨路500号11号楼803室' },
];

const demoMerchants: Merchant[] = [
  { id: 'M001', name: '老王牛肉面', phone: '13645678123', address: '上海市徐汇区宜山路455号' },
  { id: 'M002', name: '川味小馆', phone: '13556781234', address: '上海市静安区昌平路318号' },
  { id: 'M003', name: '鲜果时光', phone: '13367812345', address: '上海市浦东新区崂山路210号' },
];

const demoRiders: Rider[] = [
  { id: 'R001', name: '刘强', phone: '15878123456' },
  { id: 'R002', name: '赵磊', phone: '15981234567' },
  { id: 'R003', name: '孙浩', phone: '18612345670' },
];

/** Names for the demo orders, so scenarios and tests can pick the late one, the on-time one and so on. */
export type DemoOrderKey =
  | 'c001Late'
  | 'c001OnTime'
  | 'c001Preparing'
  | 'c001Delivered'
  | 'c002Delivered'
  | 'c002Placed'
  | 'c003Cancelled'
  | 'c003OnTime';

interface DemoOrder {
  key: DemoOrderKey;
  /** Unique across the demo data; the id is 'D' + the creation date + this number. */
  number: number;
  customerId: string;
  merchantId: string;
  riderId: string | null;
  items: OrderItem[];
  /** Promised delivery time, in minutes relative to `now`. */
  promisedInMin: number;
  riderEtaMin: number | null;
  /** Status changes in minutes relative to `now`; the first is creation, the last is the current status. */
  timeline: [OrderStatus, number][];
}

const demoOrders: DemoOrder[] = [
  {
    // Late: promised 20 minutes ago and still on the way.
    key: 'c001Late',
    number: 1,
    customerId: 'C001',
    merchantId: 'M001',
    riderId: 'R001',
    items: [
      { name: '红烧牛肉面', qty: 1, priceFen: 3200 },
      { name: '卤蛋', qty: 2, priceFen: 300 },
    ],
    promisedInMin: -20,
    riderEtaMin: 12,
    timeline: [
      ['placed', -55],
      ['preparing', -53],
      ['delivering', -35],
    ],
  },
  {
    // On time: on the way with 15 minutes to spare.
    key: 'c001OnTime',
    number: 2,
    customerId: 'C001',
    merchantId: 'M002',
    riderId: 'R002',
    items: [
      { name: '宫保鸡丁盖饭', qty: 1, priceFen: 2800 },
      { name: '酸梅汤', qty: 1, priceFen: 600 },
    ],
    promisedInMin: 15,
    riderEtaMin: 8,
    timeline: [
      ['placed', -20],
      ['preparing', -19],
      ['delivering', -5],
    ],
  },
  {
    key: 'c001Preparing',
    number: 3,
    customerId: 'C001',
    merchantId: 'M003',
    riderId: null,
    items: [{ name: '芒果西米露', qty: 2, priceFen: 1800 }],
    promisedInMin: 34,
    riderEtaMin: null,
    timeline: [
      ['placed', -6],
      ['preparing', -5],
    ],
  },
  {
    // Delivered yesterday, five minutes early.
    key: 'c001Delivered',
    number: 4,
    customerId: 'C001',
    merchantId: 'M001',
    riderId: 'R003',
    items: [{ name: '牛肉拉面', qty: 1, priceFen: 2600 }],
    promisedInMin: -24 * 60 + 40,
    riderEtaMin: null,
    timeline: [
      ['placed', -24 * 60],
      ['preparing', -24 * 60 + 2],
      ['delivering', -24 * 60 + 18],
      ['delivered', -24 * 60 + 35],
    ],
  },
  {
    key: 'c002Delivered',
    number: 5,
    customerId: 'C002',
    merchantId: 'M002',
    riderId: 'R002',
    items: [
      { name: '水煮鱼', qty: 1, priceFen: 5800 },
      { name: '米饭', qty: 2, priceFen: 200 },
    ],
    promisedInMin: -2 * 24 * 60 + 45,
    riderEtaMin: null,
    timeline: [
      ['placed', -2 * 24 * 60],
      ['preparing', -2 * 24 * 60 + 3],
      ['delivering', -2 * 24 * 60 + 25],
      ['delivered', -2 * 24 * 60 + 50],
    ],
  },
  {
    key: 'c002Placed',
    number: 6,
    customerId: 'C002',
    merchantId: 'M003',
    riderId: null,
    items: [{ name: '草莓酸奶杯', qty: 1, priceFen: 2200 }],
    promisedInMin: 38,
    riderEtaMin: null,
    timeline: [['placed', -2]],
  },
  {
    key: 'c003Cancelled',
    number: 7,
    customerId: 'C003',
    merchantId: 'M001',
    riderId: null,
    items: [{ name: '番茄牛腩面', qty: 1, priceFen: 3000 }],
    promisedInMin: -3 * 60 + 40,
    riderEtaMin: null,
    timeline: [
      ['placed', -3 * 60],
      ['cancelled', -3 * 60 + 4],
    ],
  },
  {
    key: 'c003OnTime',
    number: 8,
    customerId: 'C003',
    merchantId: 'M002',
    riderId: 'R003',
    items: [{ name: '麻婆豆腐饭', qty: 1, priceFen: 2400 }],
    promisedInMin: 10,
    riderEtaMin: 6,
    timeline: [
      ['placed', -28],
      ['preparing', -27],
      ['delivering', -8],
    ],
  },
];

/**
 * Inserts the demo data with every time relative to `now` (ms since the epoch), so the
 * same `now` gives the same rows. Seeds only an empty store: returns false and writes
 * nothing when the customers table already has rows.
 */
export function seedDemoData(db: Db, now: number): boolean {
  return runInTransaction(db, 'seed demo data', (tx) => {
    const existing = tx.select({ customers: count() }).from(customers).get();
    if ((existing?.customers ?? 0) > 0) {
      return false;
    }

    tx.insert(customers).values(demoCustomers).run();
    tx.insert(merchants).values(demoMerchants).run();
    tx.insert(riders).values(demoRiders).run();

    for (const order of demoOrders) {
      const history = order.timeline.map(([status, atMin]) => ({ status, at: now + atMin * minuteMs }));
      const current = history[history.length - 1];
      if (current === undefined) {
        throw new Error(`demo order ${order.key} has an empty timeline; give it at least its creation`);
      }

      const id = demoOrderId(order, now);
      tx.insert(orders)
        .values({
          id,
          customerId: order.customerId,
          merchantId: order.merchantId,
          riderId: order.riderId,
          items: order.items,
          amountFen: order.items.reduce((total, item) => total + item.qty * item.priceFen, 0),
          promisedAt: now + order.promisedInMin * minuteMs,
          status: current.status,
          riderEtaMin: order.riderEtaMin,
          createdAt: createdAt(order, now),
        })
        .run();
      tx.insert(orderStatusHistory)
        .values(history.map((change) => ({ orderId: id, ...change })))
        .run();
    }

    return true;
  });
}

/** Returns the ids `seedDemoData(db, now)` gives the demo orders, by role in the demo. */
export function demoOrderIds(now: number): Record<DemoOrderKey, string> {
  const entries = demoOrders.map((order) => [order.key, demoOrderId(order, now)] as const);
  return Object.fromEntries(entries) as Record<DemoOrderKey, string>;
}

// 'D' + the creation date in China Standard Time + the order's number, e.g. 'D20261204001'.
function demoOrderId(order: DemoOrder, now: number): string {
  const date = new Date(createdAt(order, now) + chinaStandardTimeOffsetMs).toISOString().slice(0, 10);
  return `D${date.replaceAll('-', '')}${String(order.number).padStart(3, '0')}`;
}

function createdAt(order: DemoOrder, now: number): number {
  const [, atMin] = order.timeline[0] ?? ['placed', 0];
  return now + atMin * minuteMs;
}
